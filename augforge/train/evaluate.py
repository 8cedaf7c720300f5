"""Whole-slice inference and per-image metrics on the test split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from augforge.config import TrainConfig
from augforge.data.records import Slice
from augforge.metrics import METRIC_NAMES, segmentation_metrics
from augforge.progress import bar as progress_bar
from augforge.train.loop import _autocast

__all__ = ["evaluate", "predict_masks"]


def _same_shape_runs(shapes: Sequence[tuple[int, ...]], max_len: int) -> list[tuple[int, int]]:
    """(start, stop) ranges of consecutive equal shapes, each at most ``max_len`` long."""
    runs: list[tuple[int, int]] = []
    start = 0
    while start < len(shapes):
        stop = start + 1
        while stop < len(shapes) and stop - start < max_len and shapes[stop] == shapes[start]:
            stop += 1
        runs.append((start, stop))
        start = stop
    return runs


@torch.inference_mode()
def predict_masks(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    batch_size: int = 16,
    threshold: float = 0.5,
    device: str = "cpu",
    channels_last: bool = True,
    amp: bool = True,
    cpu_amp: bool = False,
    progress: bool = False,
) -> list[np.ndarray]:
    """Tumour masks for whole slices: sigmoid(logits) >= threshold.

    images: (H, W) float32 in [0, 1]; consecutive slices of one shape share a batch.
    Returns one (H, W) bool array per image, in order. Leaves the model in eval mode.
    """
    dev = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(dev, memory_format=memory_format).eval()
    autocast, _ = _autocast(dev, amp, cpu_amp)  # training's precision (inference needs no loss scaling)
    # A logit threshold avoids a sigmoid over every pixel: sigmoid(z) >= t  <=>  z >= logit(t).
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    logit_threshold = float(np.log(t / (1 - t)))
    out: list[np.ndarray] = []
    with progress_bar("evaluating", len(images), enabled=progress) as bar:
        for start, stop in _same_shape_runs([im.shape for im in images], max(batch_size, 1)):
            x = torch.from_numpy(np.stack(images[start:stop]).astype(np.float32, copy=False)[:, None])
            x = x.to(dev).contiguous(memory_format=memory_format)
            with autocast:
                logits = model(x)
            pred = (logits.float() >= logit_threshold)[:, 0].cpu().numpy()
            out.extend(pred)
            bar.advance(stop - start)
    return out


def evaluate(
    model: nn.Module, slices: Sequence[Slice], cfg: TrainConfig, *, device: str = "cpu", progress: bool = False
) -> list[dict[str, Any]]:
    """Predict every slice whole and score it: one row per slice with ``image`` (id), ``class``
    (Lung-RADS label), ``spacing_mm`` and the metrics of :data:`augforge.metrics.METRIC_NAMES`
    plus ``true_px``/``pred_px``. Slices need ``.image`` set (preprocessed input)."""
    missing = [s.id for s in slices if s.image is None]
    if missing:
        raise ValueError(f"{len(missing)} test slices have no preprocessed image (first: {missing[0]})")
    preds = predict_masks(
        model,
        [s.image for s in slices],
        batch_size=cfg.eval_batch_size,
        threshold=cfg.threshold,
        device=device,
        channels_last=cfg.channels_last,
        amp=cfg.amp,
        cpu_amp=cfg.cpu_amp,
        progress=progress,
    )
    rows: list[dict[str, Any]] = []
    # Score in runs of equal shape so segmentation_metrics gets (N, H, W) stacks.
    for start, stop in _same_shape_runs([s.mask.shape for s in slices], len(slices)):
        chunk = slices[start:stop]
        m = segmentation_metrics(
            np.stack(preds[start:stop]), np.stack([s.mask for s in chunk]).astype(bool), [s.spacing_mm for s in chunk]
        )
        for k, s in enumerate(chunk):
            row: dict[str, Any] = {"image": s.id, "class": s.label, "spacing_mm": float(s.spacing_mm)}
            row.update({name: float(m[name][k]) for name in METRIC_NAMES})
            row["true_px"] = int(m["true_px"][k])
            row["pred_px"] = int(m["pred_px"][k])
            rows.append(row)
    return rows
