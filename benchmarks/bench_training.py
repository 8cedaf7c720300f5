"""U-Net training throughput against the machine's fp32 matmul peak, measured in the same run.

What it measures (printed as one JSON object):

- ``matmul_peak_gflops``: best fp32 ``torch.mm`` rate over square sizes 1024-4096 with the same
  thread count as training: the ceiling a convolution network can hope to approach on this machine.
- ``step_gflop``: floating-point operations of one training step (forward + backward) counted by
  ``torch.utils.flop_counter`` (convolutions and matmuls, 2 per multiply-add).
- ``train_gflops`` and ``fraction_of_peak``: achieved rate over the timed steps of the real training
  loop (:func:`augforge.train.train_model`: the preset's patches, sampler, prefetching, optimiser).
- ``data_wait_share``: share of the loop's wall time spent waiting for the next batch.
- ``eval_images_per_s``: whole-slice inference rate at the dataset's slice size.

Usage::

    python benchmarks/bench_training.py [--preset quick] [--steps 30] [--threads 0] \
        [--strategy none] [--set train.batch_size=16 ...] [--synthetic]

``--synthetic`` uses random slices of the preset's size instead of loading the dataset, which
measures compute alone. Numbers depend on what else runs on the machine: report them with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from augforge.config import apply_overrides, get_preset, parse_set_options, split_overrides
from augforge.models import build_model, count_parameters
from augforge.seeding import seed_everything
from augforge.train import get_loss, train_model
from augforge.train.evaluate import predict_masks


def matmul_peak_gflops(seconds_per_size: float = 0.5) -> dict[str, float]:
    """Best fp32 matmul rate (GFLOP/s) per square size, each timed for about ``seconds_per_size``."""
    out = {}
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up: thread pool, MKL dispatch
        best = 0.0
        t_end = time.perf_counter() + seconds_per_size
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
        out[str(n)] = round(best, 1)
    return out


def step_flops(model: torch.nn.Module, batch: int, side: int, loss_name: str, channels_last: bool) -> int:
    """FLOPs of one forward + backward pass on a (batch, 1, side, side) input."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(batch, 1, side, side).contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, side, side) > 0.9).float().contiguous(memory_format=fmt)
    with FlopCounterMode(display=False) as counter:
        get_loss(loss_name)(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=30, help="timed training steps")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--strategy", default="none", help="strategy whose online transform is applied")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--synthetic", action="store_true", help="random slices instead of the dataset")
    ap.add_argument("--eval-images", type=int, default=32)
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    preset_part, strategy_params = split_overrides(parse_set_options(args.overrides))
    preset = apply_overrides(get_preset(args.preset), preset_part)
    cfg = preset.train

    # Training slices: the dataset (as `augforge bench` would see it) or random arrays of its size.
    if args.synthetic:
        rng = np.random.default_rng(0)
        side = preset.data.size
        images = [rng.random((side, side), dtype=np.float32) for _ in range(64)]
        masks = [(rng.random((side, side)) > 0.995).astype(np.uint8) for _ in range(64)]
        data_name = "synthetic"
    else:
        from augforge.data.sources import load_dataset

        ds = load_dataset(preset.data, progress=False)
        images = [s.image for s in ds.train]
        masks = [s.mask for s in ds.train]
        data_name = f"{ds.name} ({ds.fingerprint})"
    from augforge.plugins import get_registry

    transform = get_registry().create(args.strategy, strategy_params).build_transform(0)

    peak = matmul_peak_gflops()
    peak_best = max(peak.values())

    seed_everything(0)
    model = build_model(preset.model)
    side = cfg.patch_size or max(im.shape[0] for im in images)
    flops = step_flops(model, cfg.batch_size, side, cfg.loss, cfg.channels_last)

    # Warm-up run (oneDNN builds its kernels on first use), then the timed run of the same loop.
    warm = apply_overrides(preset, {"train.epochs": "1", "train.steps_per_epoch": "3"}).train
    train_model(model, images, masks, warm, seed=0, transform=transform, progress=False)
    timed = apply_overrides(preset, {"train.epochs": "1", "train.steps_per_epoch": str(args.steps)}).train
    result = train_model(model, images, masks, timed, seed=1, transform=transform, progress=False)
    achieved = flops * result.steps / result.seconds / 1e9

    eval_images = images[: args.eval_images]
    predict_masks(model, eval_images[:2], batch_size=cfg.eval_batch_size)
    t0 = time.perf_counter()
    predict_masks(model, eval_images, batch_size=cfg.eval_batch_size, channels_last=cfg.channels_last)
    eval_rate = len(eval_images) / (time.perf_counter() - t0)

    print(
        json.dumps(
            {
                "preset": preset.name,
                "data": data_name,
                "strategy": args.strategy,
                "model": {
                    "arch": preset.model.arch,
                    "base_width": preset.model.base_width,
                    "depth": preset.model.depth,
                    "parameters": count_parameters(model),
                },
                "batch": [cfg.batch_size, 1, side, side],
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "matmul_peak_gflops": peak,
                "step_gflop": round(flops / 1e9, 3),
                "steps": result.steps,
                "step_ms": round(1000 * result.seconds / result.steps, 1),
                "train_gflops": round(achieved, 1),
                "fraction_of_peak": round(achieved / peak_best, 3),
                "samples_per_s": round(result.samples_per_second, 1),
                "data_wait_share": round(result.data_wait_share, 4),
                "eval_images_per_s": round(eval_rate, 2),
                "goals": {
                    "fraction_of_peak>=0.5": achieved / peak_best >= 0.5,
                    "data_wait_share<0.05": result.data_wait_share < 0.05,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
