"""A trial: train the U-Net under one strategy with one seed on one dataset, and score it.

A trial is (dataset, strategy + parameters, preset, train fraction, seed). Its key is a hash of that
configuration and the dataset's content fingerprint, so a results store can tell finished trials
from new ones across runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augforge import __version__, seeding
from augforge.clock import utc_stamp
from augforge.config import DataConfig, Preset
from augforge.data.processing.cache import cache_root
from augforge.data.records import Dataset, Slice
from augforge.metrics import METRIC_NAMES
from augforge.models import build_model, count_parameters
from augforge.seeding import seed_everything, torch_threads
from augforge.strategy import Composite, PrepareContext, Strategy, Transform
from augforge.train.allocator import keep_freed_memory
from augforge.train.evaluate import evaluate
from augforge.train.loop import cpu_has_bf16, train_model

__all__ = [
    "Trial",
    "TrialEnv",
    "TrialOutcome",
    "execute_trial",
    "failed_outcome",
    "make_trial",
    "run_trial",
    "subsample_train",
    "summarise_rows",
]


@dataclass
class Trial:
    """One cell of a study. Built by :func:`make_trial`, which resolves the strategy's description."""

    strategy: str  # as written on the command line: "none", "dcgan+affine"
    strategy_params: dict[str, dict[str, Any]]  # part name -> parameter values (from --set)
    preset: Preset  # resolved: overrides applied, data.source set
    seed: int
    train_fraction: float
    dataset_fingerprint: str
    strategy_description: dict[str, Any] = field(default_factory=dict)  # Strategy.describe()
    label: str = ""  # Strategy.label

    @property
    def name(self) -> str:
        """What reports call this trial's strategy: its label (a named hybrid), else the spec as written."""
        return self.label or self.strategy

    @property
    def config(self) -> dict[str, Any]:
        """Everything that determines the trial's result, as JSON-able data."""
        return {
            "strategy": self.name,
            "strategy_spec": self.strategy_description,
            "preset": self.preset.name,
            "settings": self.preset.trial_settings(),
            "train_fraction": self.train_fraction,
            "seed": self.seed,
        }

    @property
    def key(self) -> str:
        """16 hex digits of sha256(config + dataset fingerprint)."""
        blob = json.dumps(self.config, sort_keys=True, default=str) + "|" + self.dataset_fingerprint
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        frac = "" if self.train_fraction == 1.0 else f", train fraction {self.train_fraction:g}"
        return f"{self.name} (seed {self.seed}{frac})"


def make_trial(
    strategy: Strategy,
    spec: str,
    params: dict[str, dict[str, Any]],
    preset: Preset,
    *,
    seed: int,
    train_fraction: float,
    dataset_fingerprint: str,
) -> Trial:
    """A trial of an already validated ``strategy`` (built from ``spec`` and ``params``)."""
    return Trial(
        strategy=spec,
        strategy_params={k: dict(v) for k, v in params.items()},
        preset=preset,
        seed=seed,
        train_fraction=train_fraction,
        dataset_fingerprint=dataset_fingerprint,
        strategy_description=strategy.describe(),
        label=strategy.label,
    )


@dataclass
class TrialEnv:
    """Where and how trials run (the same for every trial of a study)."""

    device: str = "cpu"
    cache_dir: Path = field(default_factory=lambda: cache_root() / "generators")  # $AUGFORGE_CACHE/generators
    progress: bool = True
    log: Callable[[str], None] = print


@dataclass
class TrialOutcome:
    """A finished trial: ``record`` is its trials.jsonl line, ``rows`` its per-image metrics."""

    key: str
    status: str  # "ok" or "failed"
    record: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    shifted_rows: list[dict[str, Any]] = field(default_factory=list)  # the held-out site's test slices

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def subsample_train(slices: Sequence[Slice], fraction: float, seed: int, unit: str = "slices") -> list[Slice]:
    """A seeded, class-stratified subset of the training slices, in the original order; ``fraction == 1``
    returns all of them.

    unit "slices":   ``round(fraction * n)`` slices of each Lung-RADS class (at least one per class).
    unit "patients": ``round(fraction * n)`` patients of each class (a patient's class is its most
                     severe slice's; at least one per class), with every slice of theirs. On data with
                     one slice per patient the two draw the same subset.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train fraction must be in (0, 1], got {fraction}")
    if unit not in SUBSAMPLE_UNITS:
        raise ValueError(f"train.subsample must be one of {', '.join(SUBSAMPLE_UNITS)}, got {unit!r}")
    if fraction == 1.0:
        return list(slices)
    # The units to draw, in order of first appearance, each with its class and slice indices.
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(slices):
        groups.setdefault(s.id if unit == "slices" else s.patient, []).append(i)
    units = list(groups.values())
    label_of = [max((slices[i].label for i in idx), key=_severity) for idx in units]
    rng = seeding.stream(seed, seeding.SUBSAMPLE)
    keep: set[int] = set()
    for label in sorted(set(label_of)):
        members = [u for u, lab in enumerate(label_of) if lab == label]
        n = max(1, round(fraction * len(members)))
        for j in rng.permutation(len(members))[:n]:
            keep.update(units[members[j]])
    return [s for i, s in enumerate(slices) if i in keep]


SUBSAMPLE_UNITS = ("slices", "patients")


def _severity(label: str) -> int:
    from augforge.data.records import LUNG_RADS_CLASSES

    return LUNG_RADS_CLASSES.index(label) if label in LUNG_RADS_CLASSES else -1


def summarise_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The paper's aggregate (mean over test images) of every metric, and Dice per Lung-RADS class.

    HD95 is averaged over the images where it is defined; ``hd95_undefined`` counts the others (an
    empty prediction on a tumour slice, or a prediction on an empty one).
    """
    out: dict[str, Any] = {"n_images": len(rows)}
    for name in METRIC_NAMES:
        values = np.array([r[name] for r in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[name] = float(finite.mean()) if finite.size else float("nan")
    out["hd95_undefined"] = int(sum(1 for r in rows if not np.isfinite(r["hd95_mm"])))
    per_class: dict[str, dict[str, float]] = {}
    for label in sorted({r["class"] for r in rows}):
        d = [r["dice"] for r in rows if r["class"] == label]
        per_class[label] = {"n": len(d), "dice": float(np.mean(d))}
    out["per_class"] = per_class
    return out


class _PeakMemory:
    """Peak resident memory of this process during a block, sampled every 20 ms from /proc (Linux);
    elsewhere the process-lifetime peak from getrusage. CUDA: peak allocated by torch."""

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._statm = Path("/proc/self/statm")
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            return int(self._statm.read_text().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_bytes = max(self.peak_bytes, self._rss())

    def __enter__(self) -> None:
        self.peak_bytes = self._rss()
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="augforge-memory")
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss())

    def as_dict(self) -> dict[str, float]:
        out = {"peak_rss_mb": round(self.peak_bytes / 2**20, 1)}
        if self.device.startswith("cuda"):
            out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out


def _environment(device: str, threads: int | None = None) -> dict[str, Any]:
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else (platform.processor() or platform.machine())
    return {
        "versions": {
            "augforge": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "device": device,
        "device_name": name,
        # The vector instructions torch's CPU kernels use (AVX2, AVX512...): two machines that differ
        # here can round a convolution's sums differently, and a trained model with them.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        # Where freed buffers go (train/allocator.py): changes the time of a step, never its numbers.
        "allocator": "glibc-kept" if keep_freed_memory() else "system",
    }


#: A transform's image must stay finite and inside this range: the network input lies in [0, 1], and the
#: margin leaves room for noise or contrast ops that do not clip, while an image scaled x255 fails.
IMAGE_RANGE = (-1.0, 2.0)


def _contract_problem(image: np.ndarray, mask: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """What is wrong with one (image, mask) pair a strategy produced, or None: shapes, finite values
    in :data:`IMAGE_RANGE`, a binary mask."""
    if image.ndim != 2 or image.shape != mask.shape or image.shape != tuple(shape):
        return f"image {image.shape} and mask {mask.shape}, expected both {tuple(shape)}"
    if image.size and not np.isfinite(image).all():
        return "an image with NaN or infinite values"
    lo, hi = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if lo < IMAGE_RANGE[0] or hi > IMAGE_RANGE[1]:
        return (
            f"image values {lo:g}..{hi:g}, outside the network input's range [0, 1] (allowed with a "
            f"margin: {IMAGE_RANGE[0]:g}..{IMAGE_RANGE[1]:g})"
        )
    if mask.dtype != bool and not ((mask == 0) | (mask == 1)).all():
        odd = mask[(mask != 0) & (mask != 1)].flat[0].item()
        return f"a mask with values other than 0 and 1 (e.g. {odd:g}); keep it binary (nearest-neighbour)"
    return None


def strategy_origin(strategy: Strategy) -> str:
    """``'dcgan' (plugin 'dcgan')``: a strategy and the plugin(s) that registered it, for errors."""
    from augforge.plugins import get_registry

    entries = get_registry().entries
    parts = strategy.parts if isinstance(strategy, Composite) else [strategy]
    plugins = sorted({entries[p.name].plugin for p in parts if p.name in entries})
    where = f" (plugin {', '.join(repr(p) for p in plugins)})" if plugins else ""
    return f"strategy {strategy.label!r}{where}"


def _ensure_images(slices: list[Slice], data: DataConfig, who: str, shape: tuple[int, ...]) -> int:
    """Preprocess slices that a strategy added without a network input; hold every slice to the
    contract (:func:`_contract_problem`, the dataset's slice ``shape``). Returns how many were
    preprocessed here."""
    todo = [s for s in slices if s.image is None]
    if todo:
        from augforge.data.processing.preprocess import network_input

        for s in todo:
            s.image = network_input(s, data.window, data.clahe, data.input, data.field_margin_mm)
    for s in slices:
        problem = _contract_problem(np.asarray(s.image), np.asarray(s.mask), shape)
        if problem:
            raise ValueError(f"{who}: prepare returned training slice {s.id!r} with {problem}")
    return len(todo)


class _CheckedTransform:
    """Wraps a strategy's transform and fails the trial at the first malformed output, naming the
    strategy and its plugin (a wrong shape, a scaled image or a blurred mask would otherwise train and
    rank quietly, or surface as an obscure error deep inside batching)."""

    def __init__(self, transform: Transform, who: str):
        self.transform, self.who = transform, who

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.transform(image, mask)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"{self.who}: transform must return (image, mask), got {type(out).__name__}")
        img, msk = np.asarray(out[0]), np.asarray(out[1])
        problem = _contract_problem(img, msk, np.shape(image))
        if problem:
            raise ValueError(f"{self.who}: transform returned {problem}")
        return img.astype(np.float32, copy=False), msk.astype(np.uint8, copy=False)


def _record_head(trial: Trial, status: str) -> dict[str, Any]:
    """The fields every trials.jsonl record starts with, finished or failed."""
    return {
        "key": trial.key,
        "status": status,
        "strategy": trial.name,
        "seed": trial.seed,
        "train_fraction": trial.train_fraction,
        "preset": trial.preset.name,
        "config": trial.config,
    }


def run_trial(trial: Trial, dataset: Dataset, env: TrialEnv) -> TrialOutcome:
    """Run one trial to the end; exceptions propagate (see :func:`execute_trial`)."""
    from augforge.plugins import get_registry, strategy_provenance

    log = env.log
    preset = trial.preset
    cfg = preset.train
    started, t0 = utc_stamp(), time.perf_counter()
    # The process runs trials (CLI, worker): keep freed buffers for the next step, before the
    # strategy's generator fits, which train too. Same numbers, fewer page faults (allocator.py).
    keep_freed_memory()
    memory = _PeakMemory(env.device)
    with memory, torch_threads(cfg.threads):
        # 1. The strategy, and the real training slices this trial may use.
        strategy = get_registry().create(trial.strategy, trial.strategy_params)
        real = subsample_train(dataset.train, trial.train_fraction, trial.seed, preset.train.subsample)

        # 2. Offline step: the strategy may add training slices (never sees the test split).
        t_prep = time.perf_counter()
        ctx = PrepareContext.for_dataset(
            dataset,
            seed=trial.seed,
            preset=preset,
            cache_dir=env.cache_dir,
            device=env.device,
            log=log,
            progress=env.progress,
        )
        train = list(strategy.prepare(list(real), ctx))
        if not train:
            raise ValueError(f"strategy {strategy.label!r}: prepare returned no training slices")
        who = strategy_origin(strategy)
        n_preprocessed = _ensure_images(train, preset.data, who, np.shape(dataset.train[0].mask))
        prepare_s = time.perf_counter() - t_prep

        # 3. Online step and the network, both seeded by the trial.
        transform = strategy.build_transform(trial.seed)
        if transform is not None:
            transform = _CheckedTransform(transform, who)
        seed_everything(trial.seed)
        model = build_model(preset.model)
        cpu_bf16 = cfg.cpu_amp and env.device == "cpu"
        log(
            f"trial {trial.key} {trial.describe()}: {len(train)} training slices "
            f"({len(real)} real), {count_parameters(model):,} parameters, {env.device}"
            + (", bfloat16 (train.cpu_amp)" if cpu_bf16 else "")
        )
        if cpu_bf16 and not cpu_has_bf16():
            log(
                "train.cpu_amp: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), so bfloat16 "
                "runs slower than float32 here; drop --set train.cpu_amp=true unless you compare with it"
            )

        # 4. Train, then predict every test slice whole and score it.
        result = train_model(
            model,
            [s.image for s in train],
            [s.mask for s in train],
            cfg,
            seed=trial.seed,
            transform=transform,
            device=env.device,
            progress=env.progress,
            description=f"train {trial.name} s{trial.seed}",
        )
        t_eval = time.perf_counter()
        rows = evaluate(model, dataset.test, cfg, device=env.device, progress=env.progress)
        # Data acquired at a second, held-out scanner site: the same test slices as that site sees them.
        shifted = evaluate(model, dataset.shifted, cfg, device=env.device) if dataset.shifted else []
        eval_s = time.perf_counter() - t_eval
        threads = torch.get_num_threads()

    summary = summarise_rows(rows)
    record = {
        **_record_head(trial, "ok"),
        "plugins": strategy_provenance(strategy),
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "n_train": len(dataset.train),
            "n_test": len(dataset.test),
            "n_healthy": len(dataset.healthy),
            **({"n_shifted": len(dataset.shifted)} if dataset.shifted else {}),
        },
        "metrics": {k: v for k, v in summary.items() if k != "per_class"},
        "per_class": summary["per_class"],
        "training": {
            "n_real": len(real),
            "n_total": len(train),
            "n_preprocessed": n_preprocessed,
            "parameters": count_parameters(model),
            "steps": result.steps,
            "batch_size": result.batch_size,
            "final_loss": result.final_loss,
            "epoch_losses": [round(x, 5) for x in result.epoch_losses],
            "samples_per_second": round(result.samples_per_second, 2),
            "data_wait_share": round(result.data_wait_share, 4),
        },
        "timings_s": {
            "prepare": round(prepare_s, 2),
            "train": round(result.seconds, 2),
            "evaluate": round(eval_s, 2),
            "total": round(time.perf_counter() - t0, 2),
        },
        **({"shifted": _shifted_summary(shifted)} if shifted else {}),
        "memory": memory.as_dict(),
        **_environment(env.device, threads),
        "started_at": started,
        "finished_at": utc_stamp(),
    }
    head = {
        "trial": trial.key,
        "strategy": record["strategy"],
        "seed": trial.seed,
        "train_fraction": trial.train_fraction,
    }
    return TrialOutcome(
        key=trial.key,
        status="ok",
        record=record,
        rows=[{**head, **r} for r in rows],
        shifted_rows=[{**head, **r} for r in shifted],
    )


def _shifted_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A trial's scores on the held-out site's test slices: the mean metrics and Dice per class."""
    summary = summarise_rows(rows)
    return {"metrics": {k: v for k, v in summary.items() if k != "per_class"}, "per_class": summary["per_class"]}


def failed_outcome(
    trial: Trial,
    dataset: Dataset | None,
    error: str,
    details: str,
    *,
    started: str,
    seconds: float,
    device: str = "cpu",
    log_lines: Sequence[str] = (),
) -> TrialOutcome:
    """The outcome of a trial that raised (or whose worker died): record, and run.log lines with
    ``details`` (usually the traceback)."""
    record = {
        **_record_head(trial, "failed"),
        "dataset": {"name": dataset.name if dataset else "", "fingerprint": trial.dataset_fingerprint},
        "error": error,
        "timings_s": {"total": round(seconds, 2)},
        **_environment(device),
        "started_at": started,
        "finished_at": utc_stamp(),
    }
    lines = [*log_lines, f"trial {trial.key} {trial.describe()} FAILED: {error}\n{details.rstrip()}"]
    return TrialOutcome(key=trial.key, status="failed", record=record, log_lines=lines)


def execute_trial(trial: Trial, dataset: Dataset, env: TrialEnv) -> TrialOutcome:
    """:func:`run_trial`, but an exception fails only this trial: the outcome is marked failed and
    carries the traceback (for run.log). KeyboardInterrupt still stops the study."""
    lines: list[str] = []

    def log(msg: str) -> None:
        lines.append(msg)
        env.log(msg)

    started, t0 = utc_stamp(), time.perf_counter()
    try:
        outcome = run_trial(trial, dataset, dataclasses.replace(env, log=log))
    except Exception as exc:  # noqa: BLE001 -- whatever a strategy raises fails its trial, not the study
        out = failed_outcome(
            trial,
            dataset,
            f"{type(exc).__name__}: {exc}",
            traceback.format_exc(),
            started=started,
            seconds=time.perf_counter() - t0,
            device=env.device,
            log_lines=lines,
        )
        return out
    outcome.log_lines = lines
    return outcome
