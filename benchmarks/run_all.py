"""Run the performance suite: every benchmark script, medians of repeated runs, goals checked; writes
``benchmarks/results.json`` and the results table in ``docs/performance.md``.

Each benchmark script runs as its own subprocess with a timeout and prints one JSON object; a
failing or hanging script is recorded with its error and the others go on. From each script's
output the runner reads named metrics (see ``BENCHMARKS``); an entry of ``results.json`` is

    {name, value, unit, reference, ratio, goal, met, machine, versions, ...}

where ``value`` and ``reference`` are medians over the script's runs and ``ratio`` is the median of
the ratios each run measured (a reference is always timed in the same run as the value, so the
ratio is never formed across runs or machines). ``goal`` is ``{on, op, bound, text}`` ("ratio >= 100")
and ``met`` is true, false, or null when the metric has no goal or was not measured. Further keys:
``benchmark``, ``what``, ``ratio_is``, ``runs``, ``runs_planned``, ``per_run``, ``command``,
``mode`` (full or quick), ``measured_at``, ``load_average_1min`` (at the start of each run),
``error`` and ``note``.

Repeats: a benchmark runs up to its ``repeats`` times (``--repeats`` overrides). Every selected
benchmark runs once first; the extra runs follow in rounds, each only if the time so far plus
that benchmark's last run fits in ``--budget`` seconds, so the suite stays within it on a slow machine
(the entries say how many runs they got).

    python benchmarks/run_all.py                    # the suite: results.json + docs/performance.md
    python benchmarks/run_all.py --quick            # smoke test: tiny inputs, seconds per script;
                                                    # writes to a temporary folder, not the repo
    python benchmarks/run_all.py --only training --only placement   # re-measure some, keep the rest
    python benchmarks/run_all.py --render           # rebuild the docs table from results.json
    python benchmarks/run_all.py --list             # the benchmarks and their metrics
    python benchmarks/run_all.py --import-gpu benchmarks/gpu/nvidia-h200.json   # a GPU run, recorded
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import operator
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augforge.clock import utc_stamp
from augforge.errors import AugforgeError, DataError, UsageError
from augforge.fileio import atomic_write_text
from augforge.progress import Bar
from augforge.progress import bar as progress_bar

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
RESULTS_PATH = BENCH_DIR / "results.json"
DOCS_PATH = ROOT / "docs" / "performance.md"
#: The LIDC-IDRI per-slice export, where a checkout sits beside the shared data (real CT is never copied
#: into the repository).
LIDC_SLICES = Path(os.environ.get("AUGFORGE_LIDC_SLICES", ROOT.parent / "shared" / "data" / "lidc-idri-slices"))
#: The table lives between these two lines of the markdown file; everything around them is kept.
BEGIN_MARK = "<!-- perf-table:begin (written by benchmarks/run_all.py: edit around it, not inside) -->"
END_MARK = "<!-- perf-table:end -->"
#: Versions recorded in every entry; a script may add its own (a peer library's) to its entries.
_DISTRIBUTIONS = ("augforge", "torch", "numpy", "albumentations")
SUITE_PACKAGES = (*_DISTRIBUTIONS, "python")
DEFAULT_BUDGET_S = 840.0  # the issue asks for < 15 minutes on the 2-core machine; 1 minute of margin

Extract = Callable[[dict[str, Any]], float]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


# --------------------------------------------------------------------------------------------------
# What is measured


@dataclass(frozen=True)
class Goal:
    """A bound on an entry's ``value`` or ``ratio``: ``Goal("ratio", ">=", 100)``."""

    on: str  # "value" or "ratio"
    op: str  # one of <, <=, >, >=
    bound: float

    def __post_init__(self) -> None:
        if self.on not in ("value", "ratio") or self.op not in _OPS:
            raise ValueError(f"bad goal {self.on} {self.op} {self.bound}")

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        """Whether the measured figure satisfies the bound; None when it was not measured."""
        x = value if self.on == "value" else ratio
        return None if x is None else bool(_OPS[self.op](x, self.bound))

    def text(self, unit: str) -> str:
        bound = f"{self.bound:g}"
        return f"{self.on} {self.op} {bound} {unit}" if self.on == "value" else f"ratio {self.op} {bound}"

    def as_dict(self, unit: str) -> dict[str, Any]:
        return {"on": self.on, "op": self.op, "bound": self.bound, "text": self.text(unit)}


@dataclass(frozen=True)
class Metric:
    """One named figure read from a benchmark script's JSON output.

    ``value``, ``reference`` and ``ratio`` are functions of that output (the script measured the
    reference, and usually the ratio, in the same run). ``ratio_is`` says in words what the ratio is.
    """

    name: str
    what: str
    unit: str
    value: Extract
    reference: Extract | None = None
    ratio: Extract | None = None
    ratio_is: str = ""
    goal: Goal | None = None


def _allocator_row(j: dict[str, Any], what: str, precision: str, threads: int) -> dict[str, Any]:
    """bench_allocator.py's row for one measurement (KeyError if it was not measured, or if the two
    allocators computed different results, which would void the comparison)."""
    name = "bfloat16" if precision == "bf16" else precision
    for row in j["results"]:
        if row["what"] == what and row["precision"] == name and row["threads"] == threads:
            if not row["same_results"]:
                raise KeyError(f"{what} {name} on {threads} threads: the allocators computed different results")
            return row
    raise KeyError(f"no {what} {name} row on {threads} threads")


@dataclass(frozen=True)
class Benchmark:
    """A benchmark script, the arguments of its full and quick (smoke) runs, and the metrics it yields.

    ``script`` is relative to ``benchmarks/`` (or absolute). ``repeats``: runs wanted in a full suite.
    ``uses_dataset``: reads the preset's dataset from the user's cache (warmed before the suite).
    ``default``: part of the suite; others run only when named with ``--only``.
    """

    key: str
    script: str
    metrics: tuple[Metric, ...]
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()
    repeats: int = 1
    timeout_s: float = 300.0
    uses_dataset: bool = False
    default: bool = True
    note: str = ""

    def command(self, quick: bool) -> list[str]:
        return [sys.executable, str(BENCH_DIR / self.script), *(self.quick_args if quick else self.args)]


def _transform_metric(strategy: str) -> Metric:
    def strategies(j: dict[str, Any]) -> dict[str, Any]:
        return j["strategies"][strategy]

    return Metric(
        name=f"transform_overhead.{strategy}",
        what=f"`{strategy}` transform per sample: augforge's adapter vs the bare albumentations Compose",
        unit="us",
        value=lambda j: strategies(j)["adapter_us"],
        reference=lambda j: strategies(j)["bare_us"],
        ratio=lambda j: 1.0 + strategies(j)["paired_overhead"],
        ratio_is="1 + median over samples of (adapter - bare time), divided by the bare mean: the "
        "paired estimate, steady under load where the ratio of means is not",
        goal=Goal("ratio", "<=", 1.10),
    )


def _generator_benchmark(
    strategy: str, fit_what: str, sampling_what: str, *, fit_goal: Goal | None = None, sampling_goal: Goal | None = None
) -> Benchmark:
    """A generator strategy through benchmarks/bench_generators.py: one whole fit per run, then
    sampling and paste-in throughput."""
    return Benchmark(
        strategy,
        "bench_generators.py",
        args=("--strategy", strategy),
        quick_args=("--strategy", strategy, "--preset", "tiny", "--samples", "16", "--slices", "4"),
        repeats=1,
        timeout_s=900,
        uses_dataset=True,
        note="one whole fit per run, from an empty generator cache",
        metrics=(
            Metric(f"{strategy}_fit", fit_what, "s", lambda j: j["fit_s"], goal=fit_goal),
            Metric(
                f"{strategy}_sampling_throughput",
                sampling_what,
                "img/s",
                lambda j: j["sample_img_per_s"],
                goal=sampling_goal,
            ),
            Metric(
                f"{strategy}_synthesis_throughput",
                "synthetic slices made after the fit (sample, resize, place, paste, measure)",
                "slices/s",
                lambda j: j["synth_slices_per_s"],
            ),
        ),
    )


TRANSFORM_STRATEGIES = ("affine", "flip", "rotate", "elastic", "intensity", "classical")
_STRATEGY_ARGS = tuple(a for s in TRANSFORM_STRATEGIES for a in ("--strategy", s))

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "data",
        "bench_data.py",
        quick_args=("--preset", "tiny"),
        repeats=1,
        timeout_s=300,
        note="one cold build per run (it is the thing measured); --repeats 3 takes a median of three",
        metrics=(
            Metric(
                "dataset_cold_build",
                "embedded dataset built from an empty cache (LIDC parse, phantom "
                "generation, preprocessing, cache write)",
                "s",
                lambda j: j["cold_build_s"],
                goal=Goal("value", "<=", 60),
            ),
            Metric(
                "dataset_reload",
                "the same dataset loaded again from its cache, the first time (every file hashed)",
                "s",
                lambda j: j["reload_s"],
                goal=Goal("value", "<=", 3),
            ),
            Metric(
                "dataset_reload_checked",
                "a later load, as every trial after the first pays (files already checked: none hashed)",
                "s",
                lambda j: j["reload_checked_s"],
                goal=Goal("value", "<=", 3),
            ),
        ),
    ),
    Benchmark(
        "placement",
        "bench_placement.py",
        quick_args=("--preset", "tiny", "--pairs", "2"),
        repeats=3,
        timeout_s=300,
        uses_dataset=True,
        metrics=(
            Metric(
                "placement_speedup",
                "every valid tumour position on a healthy slice: augforge's "
                "correlation vs the per-position brute-force scan (median over canvas-tumour pairs)",
                "ms/slice",
                lambda j: j["median_ms_per_slice"]["placement_ms"],
                reference=lambda j: j["median_ms_per_slice"]["brute_ms"],
                ratio=lambda j: j["speedup_vs_brute"],
                ratio_is="reference / value (speed-up)",
                goal=Goal("ratio", ">=", 100),
            ),
            Metric(
                "placement_vs_numpy_windows",
                "the same against NumPy's vectorised sliding windows",
                "ms/slice",
                lambda j: j["median_ms_per_slice"]["placement_ms"],
                reference=lambda j: j["median_ms_per_slice"]["windows_ms"],
                ratio=lambda j: j["speedup_vs_numpy_windows"],
                ratio_is="reference / value (speed-up)",
            ),
        ),
    ),
    Benchmark(
        "transforms",
        "bench_transforms.py",
        args=_STRATEGY_ARGS,
        quick_args=("--preset", "tiny", "--samples", "8", "--repeats", "3", *_STRATEGY_ARGS),
        repeats=1,
        timeout_s=400,
        uses_dataset=True,
        note="adapter and bare pipeline draw the same ops on the same slices, back to back; each run "
        "is already a median over passes (21 passes over 64 slices in a full run)",
        metrics=tuple(_transform_metric(s) for s in TRANSFORM_STRATEGIES),
    ),
    Benchmark(
        "training",
        "bench_training.py",
        quick_args=("--preset", "tiny", "--steps", "3", "--eval-images", "4"),
        repeats=3,
        timeout_s=300,
        uses_dataset=True,
        metrics=(
            Metric(
                "unet_train_flops",
                "U-Net training steps in the real loop (patches, sampler, prefetch, "
                "Adam) against the best fp32 matmul rate measured in the same run",
                "GFLOP/s",
                lambda j: j["train_gflops"],
                reference=lambda j: max(j["matmul_peak_gflops"].values()),
                ratio=lambda j: j["fraction_of_peak"],
                ratio_is="value / reference (fraction of peak)",
                goal=Goal("ratio", ">=", 0.5),
            ),
            Metric("unet_step_time", "one training step of the same loop", "ms", lambda j: j["step_ms"]),
            Metric(
                "data_wait_share",
                "share of the training loop's wall time spent waiting for the next batch",
                "%",
                lambda j: 100 * j["data_wait_share"],
                goal=Goal("value", "<", 5),
            ),
            Metric("eval_throughput", "whole-slice inference", "slices/s", lambda j: j["eval_images_per_s"]),
        ),
    ),
    Benchmark(
        "allocator",
        "bench_allocator.py",
        args=("--steps", "15", "--images", "96", "--rounds", "2"),
        quick_args=("--steps", "2", "--images", "16", "--rounds", "1"),
        repeats=1,
        timeout_s=600,
        note="each measurement in a fresh process, glibc's malloc as it comes and with freed memory kept "
        "alternating; both compute the same losses and predicted masks bit for bit (checked in the run)",
        metrics=tuple(
            Metric(
                f"allocator_{what}_{precision}_{threads}t",
                ("one quick-preset training step" if what == "step" else "scoring one whole test slice (batches of 16)")
                + f" in {'bfloat16 autocast' if precision == 'bf16' else 'float32'} on {threads} "
                f"thread{'s' if threads > 1 else ''}: freed memory kept in the process (augforge's default "
                "in trials) against glibc's malloc as it comes",
                "ms",
                (lambda j, w=what, p=precision, t=threads: _allocator_row(j, w, p, t)["ms"]["kept"]),
                reference=(lambda j, w=what, p=precision, t=threads: _allocator_row(j, w, p, t)["ms"]["system"]),
                ratio=(lambda j, w=what, p=precision, t=threads: _allocator_row(j, w, p, t)["kept_over_system"]),
                ratio_is="value / reference (< 1: keeping freed memory is faster)",
                goal=Goal("ratio", "<=", 1.0),
            )
            for what in ("step", "score")
            for precision in ("float32", "bf16")
            for threads in (1, 2)
        ),
    ),
    Benchmark(
        "monai",
        "bench_unet_monai.py",
        quick_args=("--preset", "tiny", "--steps", "1", "--rounds", "2", "--warmup", "1"),
        repeats=1,
        timeout_s=300,
        note="benchmark-only dependency: pip install --no-deps monai; each run is a median over alternating rounds",
        metrics=(
            Metric(
                "unet_step_vs_monai",
                "training step on one fixed batch: augforge's plain U-Net vs MONAI's UNet of equal width and depth",
                "ms",
                lambda j: j["augforge"]["step_ms"],
                reference=lambda j: j["monai"]["step_ms"],
                ratio=lambda j: j["speedup_vs_monai"],
                ratio_is="reference / value (> 1: augforge's step is faster; the two networks do "
                "not count the same FLOPs, see the next row)",
            ),
            Metric(
                "unet_flop_rate_vs_monai",
                "the same steps as FLOP rates (each network's own FLOP count)",
                "GFLOP/s",
                lambda j: j["augforge"]["gflops"],
                reference=lambda j: j["monai"]["gflops"],
                ratio=lambda j: j["gflops_ratio_vs_monai"],
                ratio_is="value / reference",
            ),
        ),
    ),
    Benchmark(
        "dcgan",
        "bench_dcgan.py",
        quick_args=("--preset", "tiny", "--epochs", "1", "--samples", "64", "--slices", "4"),
        repeats=3,
        timeout_s=300,
        uses_dataset=True,
        metrics=(
            Metric(
                "dcgan_fit_throughput",
                "DCGAN training: real tumour patches per second through a full step (D on real and fake, then G)",
                "img/s",
                lambda j: j["fit_img_per_s"],
            ),
            Metric(
                "dcgan_fit_projected",
                "the preset's whole generator fit, projected from the timed epochs",
                "s",
                lambda j: j["fit_projected_s"],
            ),
            Metric(
                "dcgan_sampling_throughput",
                "generator sampling (inference, batch 256)",
                "img/s",
                lambda j: j["sample_img_per_s"],
            ),
            Metric(
                "dcgan_synthesis_throughput",
                "synthetic slices made after the fit (sample, resize, place, paste, measure)",
                "slices/s",
                lambda j: j["synth_slices_per_s"],
            ),
        ),
    ),
    _generator_benchmark(
        "vqvae",
        "the preset's whole VQ-VAE fit (VQ-VAE, then its PixelCNN prior)",
        "new tumour patches drawn from the prior and decoded (batch 512)",
    ),
    _generator_benchmark(
        "ddpm",
        "the preset's whole diffusion-model fit",
        "tumour patches painted in real outlines (DDIM, the preset's steps)",
        fit_goal=Goal("value", "<=", 600),
        sampling_goal=Goal("value", ">=", 50),
    ),
    Benchmark(
        "main_job",
        "bench_main_job.py",
        quick_args=("--preset", "tiny"),
        repeats=1,
        timeout_s=900,
        note="the whole job once per run, from a cold cache (dataset build and generator fit included)",
        metrics=(
            Metric(
                "main_job_wall_time",
                "`augforge bench --strategy dcgan` from process start to exit, cold cache",
                "s",
                lambda j: j["wall_s"],
                goal=Goal("value", "<=", 600),
            ),
            Metric(
                "main_job_peak_memory",
                "peak memory of the job's process tree (max of summed PSS and the largest process's peak RSS)",
                "GiB",
                lambda j: j["peak_gib"],
                goal=Goal("value", "<=", 4),
            ),
        ),
    ),
    Benchmark(
        "lidc_trial",
        "bench_main_job.py",
        args=("--data", str(LIDC_SLICES)),
        quick_args=("--preset", "tiny"),
        repeats=1,
        timeout_s=900,
        default=False,
        note="real CT: the LIDC per-slice export at ../shared/data/lidc-idri-slices (or "
        "$AUGFORGE_LIDC_SLICES); cold cache, baseline + dcgan; runs only with --only lidc_trial",
        metrics=(
            Metric(
                "lidc_quick_trial",
                "the longest `quick` trial (baseline or dcgan, generator fit included) "
                "of `augforge bench --strategy dcgan --data lidc-idri-slices`",
                "s",
                lambda j: j["max_trial_s"],
                goal=Goal("value", "<=", 180),
            ),
            Metric(
                "lidc_generator_fit",
                "the one-time DCGAN fit inside the first dcgan trial (cached: later trials on the same "
                "training set reuse it)",
                "s",
                lambda j: j["generator_fit_s"],
            ),
            Metric(
                "lidc_quick_trial_without_fit",
                "the longest `quick` trial of the same job with the one-time generator fit taken out",
                "s",
                lambda j: j["max_trial_without_fit_s"],
            ),
            Metric(
                "lidc_job_wall_time",
                "the same job from process start to exit, cold cache (dataset build included)",
                "s",
                lambda j: j["wall_s"],
            ),
        ),
    ),
    Benchmark(
        "study_throughput",
        "bench_study_throughput.py",
        args=("--seeds", "4", "--set", "train.epochs=3", "--check-workers", "--bf16", "--allocator"),
        quick_args=("--preset", "tiny", "--seeds", "2", "--set", "train.epochs=2", "--bf16"),
        repeats=1,
        timeout_s=900,
        uses_dataset=True,
        default=False,
        note="4 baseline trials shortened to 3 epochs, one after another on all cores, then with "
        "train.threads=1 in one process per core, then the same with train.cpu_amp=true (different, recorded "
        "settings: other numbers); runs only with --only study_throughput",
        metrics=(
            Metric(
                "default_study_wall_time",
                "the default study (benchmarks/studies/default.toml: 48 trials of the `fast` preset, two at a "
                "time) as committed in benchmarks/studies/default-run, generators fitted in the run: first "
                "trial's start to last trial's end",
                "min",
                lambda j: j["default_study_wall_s"] / 60 if j.get("default_study_wall_s") else None,
                goal=Goal("value", "<=", 30),
            ),
            Metric(
                "quick_study_wall_time",
                "the same design at quick's budget (benchmarks/studies/quick.toml, the default study until "
                "2026-12-01) as committed in benchmarks/studies/quick-run: its trial times summed, run one after "
                "another on 2 threads",
                "min",
                lambda j: j["quick_study_s"] / 60,
            ),
            Metric(
                "quick_study_wall_time_now",
                "the same trials, one after another on 2 threads, with the code of this run: the committed time "
                "divided by the allocator's speed-up measured in this run (1 when the committed run already had it)",
                "min",
                lambda j: j["quick_study_now_s"] / 60,
                reference=lambda j: j["quick_study_s"] / 60,
                ratio=lambda j: j["quick_study_s"] / j["quick_study_now_s"],
                ratio_is="reference / value: whole shortened trials, glibc's malloc as it comes against freed "
                "memory kept, one after another in one worker each (same numbers)",
            ),
            Metric(
                "quick_study_wall_time_parallel",
                "the same trials projected with train.threads=1, one trial per core at once: the row above "
                "divided by the study speed-up measured in this run",
                "min",
                lambda j: j["quick_study_parallel_s"] / 60,
                reference=lambda j: j["quick_study_now_s"] / 60,
                ratio=lambda j: j["speedup"],
                ratio_is="reference / value: the whole study's speed-up, measured side by side on the same trials",
            ),
            Metric(
                "quick_study_bf16_wall_time",
                "the quick study's trials with bfloat16 on the CPU, one thread each, two at a time "
                "(benchmarks/studies/quick-bf16.toml) as committed in benchmarks/studies/quick-bf16-run: "
                "first trial's start to last trial's end",
                "min",
                lambda j: j["quick_bf16_study_wall_s"] / 60 if j.get("quick_bf16_study_wall_s") else None,
            ),
            Metric(
                "study_speedup_bf16",
                "the shortened trials with train.cpu_amp=true, one thread each, one per core at once, against "
                "one after another in float32 on all cores (same run)",
                "s",
                lambda j: j["bf16_s"],
                reference=lambda j: j["sequential_s"],
                ratio=lambda j: j["sequential_s"] / j["bf16_s"] if j.get("bf16_s") else None,
                ratio_is="reference / value: the study's speed-up",
            ),
            Metric(
                "study_trial_time_parallel",
                "a shortened quick trial's own time with one thread while another runs beside it, against "
                "the same trial alone on two threads",
                "s",
                lambda j: j["trial_s"]["parallel"],
                reference=lambda j: j["trial_s"]["sequential"],
                ratio=lambda j: j["trial_s"]["parallel"] / j["trial_s"]["sequential"],
                ratio_is="value / reference",
            ),
        ),
    ),
    Benchmark(
        "paper_cpu",
        "gpu_check.py",
        args=("--cpu",),
        quick_args=("--smoke",),
        repeats=1,
        timeout_s=900,
        default=False,
        note="the paper preset's parts at full size on this CPU, a few steps each (benchmarks/gpu_check.py --cpu); "
        "runs only with --only paper_cpu",
        metrics=(
            Metric(
                "paper_step_cpu",
                "one training step of the paper preset's U-Net (VGG11 encoder, 512x512, batch 6, SGD) on this CPU",
                "s",
                lambda j: j["unet_paper"]["step_ms_amp_off"] / 1000,
            ),
            Metric(
                "paper_trial_projected_cpu",
                "a paper-preset trial projected from it: 40 epochs of the 708 training slices, then the test set",
                "h",
                lambda j: j["unet_paper"]["projected_trial_s"] / 3600,
            ),
            Metric(
                "paper_dcgan_fit_projected_cpu",
                "the paper's DCGAN fit (64x64, batch 128, 300 epochs of 708 patches) projected from timed steps",
                "h",
                lambda j: j["dcgan_paper"]["paper_fit_projected_s"] / 3600,
            ),
            Metric(
                "paper_vqvae_fit_projected_cpu",
                "the paper-sized VQ-VAE fit (width 256, 15,000 updates) projected from timed updates",
                "h",
                lambda j: j["vqvae_paper"]["vqvae_fit_projected_s"] / 3600,
            ),
        ),
    ),
    Benchmark(
        "data_ct",
        "bench_data.py",
        args=("--physics", "ct"),
        quick_args=("--preset", "tiny", "--physics", "ct"),
        repeats=1,
        timeout_s=300,
        default=False,
        note="lidc-phantom with data.physics ct: every training and test slice acquired at two sites; "
        "runs only with --only data_ct",
        metrics=(
            Metric(
                "dataset_ct_cold_build",
                "lidc-phantom with CT physics at two sites, built from an empty cache (1,372 slices, 2,344 images)",
                "s",
                lambda j: j["cold_build_s"],
                goal=Goal("value", "<=", 60),
            ),
            Metric(
                "dataset_ct_reload",
                "the same dataset loaded again from its cache, the first time (every file hashed)",
                "s",
                lambda j: j["reload_s"],
                goal=Goal("value", "<=", 3),
            ),
            Metric(
                "dataset_ct_reload_checked",
                "a later load, as every trial after the first pays (files already checked: none hashed)",
                "s",
                lambda j: j["reload_checked_s"],
                goal=Goal("value", "<=", 3),
            ),
        ),
    ),
    Benchmark(
        "data_ct_tiny",
        "bench_data.py",
        args=("--preset", "tiny", "--physics", "ct"),
        quick_args=("--preset", "tiny", "--physics", "ct"),
        repeats=3,
        timeout_s=120,
        default=False,
        note="the tiny preset's dataset with data.physics ct (the tests'); runs only with --only data_ct_tiny",
        metrics=(
            Metric(
                "dataset_ct_tiny_build",
                "the tiny preset's dataset with CT physics, built from an empty cache (parsing the LIDC "
                "annotations included)",
                "s",
                lambda j: j["cold_build_s"],
                goal=Goal("value", "<=", 2),
            ),
            Metric(
                "dataset_ct_tiny_build_parsed",
                "the same, the LIDC annotations already parsed (kept in the cache once per machine, as in "
                "a test session after its first dataset)",
                "s",
                lambda j: round(j["cold_build_s"] - j["lidc_parse_s"], 2),
                goal=Goal("value", "<=", 2),
            ),
        ),
    ),
    Benchmark(
        "gpu",
        "gpu_check.py",
        quick_args=("--smoke",),
        repeats=1,
        timeout_s=600,
        default=False,
        note="measured on a CUDA machine by benchmarks/gpu_check.py and recorded with --import-gpu (the "
        "machine named in each entry); the raw output is in benchmarks/gpu/",
        metrics=(
            Metric(
                "gpu_paper_step",
                "one training step of the paper preset's U-Net (VGG11 encoder, 512x512, batch 6, SGD) on the "
                "GPU with mixed precision, against the same step in fp32",
                "ms",
                lambda j: j["unet_paper"]["step_ms_amp_on"],
                reference=lambda j: j["unet_paper"]["step_ms_amp_off"],
                ratio=lambda j: j["unet_paper"]["amp_speedup"],
                ratio_is="reference / value: mixed precision's speed-up",
            ),
            Metric(
                "gpu_paper_trial_projected",
                "a paper-preset trial projected from the faster step: 40 epochs of the 708 training slices, "
                "then the test set",
                "s",
                lambda j: j["unet_paper"]["projected_trial_s"],
            ),
            Metric(
                "gpu_paper_dcgan_fit",
                "the paper's DCGAN (64x64, batch 128): real patches per second through a full fit step",
                "patches/s",
                lambda j: j["dcgan_paper"]["fit_img_per_s"],
            ),
            Metric(
                "gpu_paper_dcgan_fit_projected",
                "the paper's DCGAN fit (300 epochs of 708 patches) projected from it",
                "s",
                lambda j: j["dcgan_paper"]["paper_fit_projected_s"],
            ),
            Metric(
                "gpu_paper_vqvae_fit_projected",
                "the paper-sized VQ-VAE fit (width 256, 15,000 updates) projected from timed updates",
                "s",
                lambda j: j["vqvae_paper"]["vqvae_fit_projected_s"],
            ),
            Metric(
                "gpu_tiny_study",
                "`augforge bench --preset tiny --strategy flip` end to end (2 trials)",
                "s",
                lambda j: j["tiny_study"]["wall_s"],
            ),
            Metric(
                "gpu_main_job_wall_time",
                "the README's main job (`augforge bench --strategy dcgan`, quick preset) from an empty cache",
                "s",
                lambda j: j["main_job"]["wall_s"],
            ),
            Metric(
                "gpu_fit_repeat_max_diff",
                "two DCGAN fits with the same seed and patches (3 epochs): largest weight difference with "
                "torch's deterministic algorithms on (as augforge fits), against off",
                "",
                lambda j: j["fit_repeat"]["deterministic_on"]["max_abs_diff"],
                reference=lambda j: j["fit_repeat"]["deterministic_off"]["max_abs_diff"],
            ),
        ),
    ),
    Benchmark(
        "ray",
        "bench_ray.py",
        quick_args=("--seeds", "1", "--set", "train.epochs=1"),
        repeats=1,
        timeout_s=400,
        default=False,
        note="informational, not one of the suite's goals; runs only with --only ray",
        metrics=(
            Metric(
                "ray_study_speedup",
                "a tiny study (baseline + flip, 2 seeds): in-process executor vs a "
                "local 2-CPU Ray instance with warm workers",
                "s",
                lambda j: j["ray_warm_s"],
                reference=lambda j: j["local_s"],
                ratio=lambda j: j["speedup_warm"],
                ratio_is="reference / value (speed-up)",
            ),
        ),
    ),
)


# --------------------------------------------------------------------------------------------------
# Running


@dataclass
class Run:
    """One run of a benchmark script: its JSON output, or why there is none."""

    output: dict[str, Any] | None
    error: str | None
    wall_s: float
    load_before: float | None


def last_json_object(text: str) -> dict[str, Any]:
    """The last JSON object in ``text`` that starts at the beginning of a line (scripts may log
    before it). Raises ValueError when there is none."""
    decoder = json.JSONDecoder()
    for match in reversed(list(re.finditer(r"^\{", text, re.MULTILINE))):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    raise ValueError("no JSON object on its standard output")


def _load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _tail(text: str, lines: int = 3) -> str:
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


def run_script(bench: Benchmark, *, quick: bool, log_dir: Path | None = None, attempt: int = 1) -> Run:
    """Run ``bench``'s script once in its own process group; kill the whole group on timeout.

    The script's stdout and stderr go to ``log_dir/<key>-<attempt>.{out,err}`` when given.
    """
    cmd = bench.command(quick)
    load = _load_average()
    t0 = time.perf_counter()
    # A new session: a timeout or Ctrl-C can end the script and every worker it started, and only them.
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=bench.timeout_s)
        failure = None if proc.returncode == 0 else f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        failure = f"timed out after {bench.timeout_s:.0f} s"
    except BaseException:  # Ctrl-C: the script is in another session and would not see it
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    wall = time.perf_counter() - t0
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{bench.key}-{attempt}.out").write_text(out)
        (log_dir / f"{bench.key}-{attempt}.err").write_text(err)
    if failure is not None:
        return Run(None, f"{failure}: {_tail(err)}", wall, load)
    try:
        return Run(last_json_object(out), None, wall, load)
    except ValueError as exc:
        return Run(None, f"{exc} ({_tail(err)})", wall, load)


def warm_dataset_cache(quick: bool) -> Run:
    """Build (or reload) the preset's dataset in the user's cache, so that no timed script pays a
    cold build that is not its subject; the data benchmark times the cold build in a cache of its own."""
    preset = "tiny" if quick else "quick"
    code = (
        "from augforge.config import get_preset; from augforge.data.sources import load_dataset; "
        f"load_dataset(get_preset({preset!r}).data, progress=False)"
    )
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        return Run(None, "dataset cache warm-up timed out after 600 s", time.perf_counter() - t0, None)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return Run(None, f"dataset cache warm-up failed: {_tail(proc.stderr)}", wall, None)
    return Run({}, None, wall, None)


def _median(xs: Sequence[float | None]) -> float | None:
    clean = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return _round(statistics.median(clean)) if clean else None


def _round(x: float | None, digits: int = 6) -> float | None:
    """``x`` to ``digits`` significant digits: medians of floats carry no more information than that."""
    if x is None or x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def make_entry(
    metric: Metric,
    bench: Benchmark,
    runs: Sequence[Run],
    *,
    machine: dict[str, Any],
    versions: dict[str, str],
    quick: bool,
    runs_planned: int | None = None,
    measured_at: str | None = None,
) -> dict[str, Any]:
    """The results.json entry of ``metric`` from ``bench``'s runs: medians, goal, what went wrong."""
    samples: list[tuple[float, float | None, float | None]] = []
    errors: list[str] = [r.error for r in runs if r.error]
    reasons: list[str] = []
    script_versions: dict[str, str] = {}
    for run in runs:
        out = run.output
        if out is None:
            continue
        if out.get("available") is False:  # an optional peer that cannot run here
            reasons.append(str(out.get("reason", "not available on this machine")))
            continue
        try:
            value = float(metric.value(out))
            reference = None if metric.reference is None else float(metric.reference(out))
            ratio = None if metric.ratio is None else float(metric.ratio(out))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            errors.append(f"output has no usable {exc!s} for {metric.name}")
            continue
        samples.append((value, reference, ratio))
        script_versions.update({k: str(v) for k, v in (out.get("versions") or {}).items()})

    value = _median([s[0] for s in samples])
    reference = _median([s[1] for s in samples])
    ratio = _median([s[2] for s in samples])
    notes = list(dict.fromkeys([*reasons, *([bench.note] if bench.note else [])]))
    if samples and errors:
        notes.append(f"{len(errors)} of {len(runs)} runs failed: {errors[0]}")
    return {
        "name": metric.name,
        "value": value,
        "unit": metric.unit,
        "reference": reference,
        "ratio": ratio,
        "goal": None if metric.goal is None else metric.goal.as_dict(metric.unit),
        "met": None if metric.goal is None else metric.goal.met(value, ratio),
        "machine": machine,
        "versions": {**versions, **script_versions},
        "benchmark": bench.key,
        "what": metric.what,
        "ratio_is": metric.ratio_is or None,
        "runs": len(samples),
        "runs_planned": runs_planned if runs_planned is not None else len(runs),
        "per_run": [_round(s[0]) for s in samples],
        "command": " ".join(
            ["python", os.path.relpath(BENCH_DIR / bench.script, ROOT), *(bench.quick_args if quick else bench.args)]
        ),
        "mode": "quick" if quick else "full",
        "measured_at": measured_at or utc_stamp(),
        "load_average_1min": [r.load_before for r in runs],
        "error": None if samples or reasons else "; ".join(dict.fromkeys(errors)) or "no runs",
        "note": "; ".join(notes) or None,
    }


@dataclass
class SuiteProgress:
    """Reports runs as they start and end on stderr: one line per run, under a progress bar
    unless disabled."""

    total: int
    enabled: bool = True
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, init=False)
    _bar: Bar = field(default_factory=Bar, init=False)

    def __enter__(self) -> None:
        self._bar = self._stack.enter_context(
            progress_bar("benchmarks", self.total, enabled=self.enabled, spinner=True, eta=False)
        )

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)

    def start(self, text: str) -> None:
        self._bar.update(description=text)

    def done(self, text: str, advance: int = 1) -> None:
        self._bar.note(text)
        self._bar.advance(advance)


def run_suite(
    benchmarks: Sequence[Benchmark],
    *,
    quick: bool = False,
    repeats: int | None = None,
    budget_s: float = DEFAULT_BUDGET_S,
    log_dir: Path | None = None,
    progress: bool = True,
    machine: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
    warm_cache: bool = True,
) -> list[dict[str, Any]]:
    """Run ``benchmarks`` and return their results.json entries, in the order of their metrics.

    Every benchmark runs once, then the repeats follow round by round while the elapsed time plus
    the benchmark's last run time fits ``budget_s``; a benchmark whose run failed is not run again.
    ``repeats`` overrides each benchmark's own (a quick run makes one run each unless given).
    """
    t_start = time.perf_counter()
    machine = machine if machine is not None else machine_info()
    versions = versions if versions is not None else package_versions()
    measured_at = utc_stamp()
    wanted = {b.key: repeats or (1 if quick else b.repeats) for b in benchmarks}
    runs: dict[str, list[Run]] = {b.key: [] for b in benchmarks}
    warm = warm_cache and any(b.uses_dataset for b in benchmarks)

    bar = SuiteProgress(total=sum(wanted.values()) + warm, enabled=progress)
    with bar:
        if warm:
            bar.start("dataset cache")
            w = warm_dataset_cache(quick)
            bar.done(f"dataset cache ready in {w.wall_s:.1f} s" if w.error is None else w.error)
        for round_no in range(max(wanted.values(), default=0)):
            for b in benchmarks:
                if round_no >= wanted[b.key]:
                    continue
                if round_no > 0:
                    last = runs[b.key][-1]
                    elapsed = time.perf_counter() - t_start
                    if last.output is None or elapsed + last.wall_s > budget_s:
                        why = (
                            "its last run failed"
                            if last.output is None
                            else f"budget: {elapsed:.0f} s + {last.wall_s:.0f} s > {budget_s:.0f} s"
                        )
                        bar.done(
                            f"{b.key}: runs {round_no + 1}-{wanted[b.key]} skipped ({why})",
                            advance=wanted[b.key] - round_no,
                        )
                        wanted[b.key] = round_no  # no later rounds either
                        continue
                bar.start(f"{b.key} run {round_no + 1}/{wanted[b.key]}")
                run = run_script(b, quick=quick, log_dir=log_dir, attempt=round_no + 1)
                runs[b.key].append(run)
                status = "ok" if run.error is None else f"FAILED: {run.error}"
                bar.done(f"{b.key} run {round_no + 1}: {run.wall_s:.1f} s, {status}")

    return [
        make_entry(
            m,
            b,
            runs[b.key],
            machine=machine,
            versions=versions,
            quick=quick,
            runs_planned=repeats or (1 if quick else b.repeats),
            measured_at=measured_at,
        )
        for b in benchmarks
        for m in b.metrics
    ]


# --------------------------------------------------------------------------------------------------
# Machine and versions


def _cpuinfo() -> tuple[str, int | None]:
    """(CPU model name, physical cores) from /proc/cpuinfo; elsewhere platform's name and None."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), None
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    cores = set()
    for block in text.split("\n\n"):
        fields = dict(ln.split(":", 1) for ln in block.splitlines() if ":" in ln)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return model, len(cores) or None


def _ask_torch(code: str) -> str | None:
    """What ``code`` prints, run in a child process so this one stays free of torch."""
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None


def _gpu_name() -> str | None:
    """The CUDA device torch sees."""
    return _ask_torch("import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')")


def _cpu_capability() -> str | None:
    """The vector instructions torch's CPU kernels use (AVX2, AVX512): timings differ with them."""
    return _ask_torch("import torch; print(torch.backends.cpu.get_cpu_capability())")


def machine_info() -> dict[str, Any]:
    """CPU model, logical and physical cores, RAM (GiB), GPU (None when torch sees no CUDA device), OS."""
    model, physical = _cpuinfo()
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram = float("nan")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "physical_cores": physical,
        "ram_gib": round(ram, 1),
        "gpu": _gpu_name(),
        "os": platform.platform(),
        "cpu_capability": _cpu_capability(),
    }


def package_versions() -> dict[str, str]:
    """Installed versions of augforge, torch, numpy, albumentations, and Python's."""
    out = {}
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["python"] = platform.python_version()
    return out


# --------------------------------------------------------------------------------------------------
# Results file and report


def write_results(path: Path, entries: Sequence[dict[str, Any]]) -> None:
    """Write ``entries`` as a JSON list, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(list(entries), indent=2, allow_nan=False) + "\n")


def read_results(path: Path) -> list[dict[str, Any]]:
    """The entries of a results file; DataError when it is missing or not a list of entries."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run benchmarks/run_all.py first") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); rerun benchmarks/run_all.py") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) and "name" in e for e in data):
        raise DataError(f"{path}: expected a JSON list of entries with a 'name'; rerun benchmarks/run_all.py")
    return data


def merge_entries(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with every entry of a benchmark in ``new`` replaced by ``new``'s (which keep their
    place; entries of benchmarks that ``old`` lacks come at the end)."""
    fresh = {e["benchmark"] for e in new}
    out: list[dict[str, Any]] = []
    placed: set[str] = set()
    for e in old:
        bench = e.get("benchmark")
        if bench in fresh:
            if bench not in placed:
                out.extend(n for n in new if n["benchmark"] == bench)
                placed.add(bench)
        else:
            out.append(e)
    out.extend(n for n in new if n["benchmark"] not in placed)
    return out


def _fmt(x: float | None) -> str:
    """A number for the table: 3 significant digits, thousands separated, no exponent."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    digits = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(entries: Sequence[dict[str, Any]]) -> str:
    """The markdown block that goes between the markers: table, ratio definitions, notes, machine."""
    lines = []
    if any(e.get("mode") == "quick" for e in entries):
        warning = "**Smoke test (`--quick`): tiny inputs; the figures show that the scripts run, not speed.**"
        lines += [warning, ""]
    lines += [
        "| metric | what | measured | reference (same run) | ratio | goal | met | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        unit = e.get("unit", "")
        if e.get("value") is None:
            why = e.get("error") or e.get("note") or "not measured"
            measured = f"not measured: {why[:120]}"
        else:
            measured = f"{_fmt(e['value'])} {unit}"
        reference = "-" if e.get("reference") is None else f"{_fmt(e['reference'])} {unit}"
        goal = (e.get("goal") or {}).get("text", "-")
        met = {True: "yes", False: "**no**", None: "-"}[e.get("met")]
        runs = f"{e.get('runs', 0)}/{e.get('runs_planned', e.get('runs', 0))}"
        lines.append(
            "| "
            + " | ".join(
                _cell(c)
                for c in (
                    f"`{e['name']}`",
                    e.get("what", ""),
                    measured,
                    reference,
                    _fmt(e.get("ratio")),
                    goal,
                    met,
                    runs,
                )
            )
            + " |"
        )

    goals = [e for e in entries if e.get("goal")]
    met = [e["name"] for e in goals if e.get("met") is True]
    missed = [e["name"] for e in goals if e.get("met") is False]
    unmeasured = [e["name"] for e in goals if e.get("met") is None]
    summary = f"Goals met: {len(met)} of {len(goals)}."
    if missed:
        summary += " Not met: " + ", ".join(f"`{n}`" for n in missed) + "."
    if unmeasured:
        summary += " Not measured: " + ", ".join(f"`{n}`" for n in unmeasured) + "."
    lines += ["", summary]

    ratios: dict[str, list[str]] = {}  # one line per definition: the six transform rows share one
    for e in entries:
        if e.get("ratio_is"):
            ratios.setdefault(e["ratio_is"], []).append(f"`{e['name']}`")
    if ratios:
        lines += ["", "Ratios:"]
        lines += [f"- {', '.join(names)}: {text}" for text, names in ratios.items()]
    notes = {}
    for e in entries:
        if e.get("note"):
            notes.setdefault(e["benchmark"], e["note"])
    if notes:
        lines += ["", "Notes:"]
        lines += [f"- {bench}: {note}" for bench, note in notes.items()]

    lines += ["", "Measured on:"]
    # Group by machine, mode and the suite's own versions; a peer's version (monai) is listed beside.
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        core = {k: v for k, v in (e.get("versions") or {}).items() if k in SUITE_PACKAGES}
        key = json.dumps([e.get("machine"), core, e.get("mode")], sort_keys=True)
        groups.setdefault(key, []).append(e)
    for group in groups.values():
        m, v = group[0].get("machine") or {}, {}
        for e in group:
            v.update(e.get("versions") or {})
        when = sorted({e.get("measured_at", "")[:10] for e in group} - {""})
        loads = [x for e in group for x in e.get("load_average_1min") or [] if x is not None]
        load = f"; 1-min load average at run starts {min(loads):.1f} to {max(loads):.1f}" if loads else ""
        cores = f"{m.get('cores')} logical" + (
            f" / {m['physical_cores']} physical cores" if m.get("physical_cores") else " cores"
        )
        lines.append(
            f"- {', '.join(when) or 'unknown date'}, {group[0].get('mode', 'full')} mode "
            f"({len(group)} metrics): {m.get('cpu', '?')}"
            + (f" ({m['cpu_capability']})" if m.get("cpu_capability") else "")
            + f", {cores}, {m.get('ram_gib', '?')} GiB RAM, "
            f"GPU {m.get('gpu') or 'none'}; " + ", ".join(f"{k} {val}" for k, val in v.items()) + load
        )
    return "\n".join(lines)


def update_markdown(path: Path, block: str, *, source: Path | None = None) -> None:
    """Replace what lies between the markers of ``source`` (default: ``path``) with ``block`` and
    write the result to ``path``; the text outside the markers is kept as it is."""
    source = source or path
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise DataError(
            f"{source}: not found; create it with the lines {BEGIN_MARK!r} and {END_MARK!r} where the table goes"
        ) from None
    lines = text.splitlines(keepends=True)
    begin = [i for i, ln in enumerate(lines) if ln.startswith("<!-- perf-table:begin")]
    end = [i for i, ln in enumerate(lines) if ln.startswith(END_MARK)]
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        raise DataError(
            f"{source}: needs exactly one '<!-- perf-table:begin ... -->' line followed by one "
            f"{END_MARK!r} line where the table goes; fix it, then run with --render"
        )
    new = [*lines[: begin[0]], BEGIN_MARK + "\n", block.rstrip("\n") + "\n", *lines[end[0] :]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(new))


def print_summary(entries: Sequence[dict[str, Any]]) -> None:
    """A rich table of the entries on stdout."""
    from rich.console import Console
    from rich.table import Column, Table

    table = Table(Column("metric", no_wrap=True), "measured", "reference", "ratio", "goal", "met", "runs")
    for e in entries:
        value = f"{_fmt(e['value'])} {e['unit']}" if e["value"] is not None else "[red]not measured[/red]"
        reference = "-" if e["reference"] is None else f"{_fmt(e['reference'])} {e['unit']}"
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[e["met"]]
        table.add_row(
            e["name"],
            value,
            reference,
            _fmt(e["ratio"]),
            (e["goal"] or {}).get("text", "-"),
            met,
            f"{e['runs']}/{e['runs_planned']}",
        )
    # Not a terminal (a log file): wide enough that no row wraps.
    Console(width=None if sys.stdout.isatty() else 160).print(table)


# --------------------------------------------------------------------------------------------------
# Command line


def import_gpu(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The ``gpu`` benchmark's entries from outputs of ``gpu_check.py`` made on a CUDA machine.

    Several files are merged part by part (a later file's parts are added to the earlier ones');
    the machine, versions and time are the first file's. A file without a CUDA device, or a smoke
    or --cpu run, is refused: these entries stand for a GPU.
    """
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: not found; give the JSON that gpu_check.py --out wrote") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); give the JSON that gpu_check.py --out wrote") from None
        if not isinstance(data, dict) or data.get("cuda") is None or data.get("smoke") or "machine" not in data:
            raise DataError(
                f"{path}: not the output of a full gpu_check.py run on a CUDA machine (needs 'cuda', 'machine' "
                "and no smoke run)"
            )
        merged = {**data, **merged} if merged else dict(data)
    first = json.loads(paths[0].read_text())
    m = first["machine"]
    driver = f", driver {m['driver']}" if m.get("driver") else ""
    machine = {
        "cpu": m.get("cpu"),
        "cores": m.get("cores"),
        "physical_cores": None,
        "ram_gib": m.get("ram_gib"),
        "gpu": f"{first['device']} ({m.get('gpu_memory_gib')} GiB{driver})",
        "os": None,
    }
    versions = {"torch": first["torch"], "cuda": first["cuda"], "numpy": m.get("numpy"), "python": m.get("python")}
    bench = next(b for b in BENCHMARKS if b.key == "gpu")
    run = Run(output=merged, error=None, wall_s=0.0, load_before=None)
    stamp = first.get("measured_at")
    return [
        make_entry(
            metric, bench, [run], machine=machine, versions=versions, quick=False, runs_planned=1, measured_at=stamp
        )
        for metric in bench.metrics
    ]


def select(names: Sequence[str]) -> list[Benchmark]:
    """The benchmarks named (in suite order), or the default suite when ``names`` is empty."""
    if not names:
        return [b for b in BENCHMARKS if b.default]
    known = {b.key for b in BENCHMARKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--only {unknown[0]}: no such benchmark; choose from {', '.join(sorted(known))}")
    return [b for b in BENCHMARKS if b.key in names]


def _list() -> None:
    for b in BENCHMARKS:
        extra = "" if b.default else "  (only with --only)"
        print(f"{b.key}: benchmarks/{b.script}, {b.repeats} run(s), timeout {b.timeout_s:.0f} s{extra}")
        for m in b.metrics:
            goal = f"  [goal: {m.goal.text(m.unit)}]" if m.goal else ""
            print(f"    {m.name} ({m.unit}){goal}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: every script on tiny inputs, one run each; writes to a temporary "
        "folder unless --out/--docs are given",
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this benchmark (repeatable; see --list); other entries of --out are kept",
    )
    ap.add_argument("--repeats", type=int, help="runs per benchmark (default: each benchmark's own)")
    ap.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        metavar="SECONDS",
        help="no repeat starts that would end past this (default: %(default)s)",
    )
    ap.add_argument("--out", type=Path, help=f"results file (default: {os.path.relpath(RESULTS_PATH)})")
    ap.add_argument("--docs", type=Path, help=f"markdown file to update (default: {os.path.relpath(DOCS_PATH)})")
    ap.add_argument("--no-docs", action="store_true", help="do not touch the markdown file")
    ap.add_argument("--render", action="store_true", help="only rebuild the markdown table from --out")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and their metrics")
    ap.add_argument(
        "--import-gpu",
        type=Path,
        action="append",
        metavar="FILE",
        help="record the gpu benchmark from gpu_check.py output made on a CUDA machine (repeatable: parts merged)",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    try:
        if args.list:
            _list()
            return 0
        if args.repeats is not None and args.repeats < 1:
            raise UsageError(f"--repeats {args.repeats}: give at least 1")
        if args.render:
            if args.quick and not (args.out and args.docs):
                raise UsageError("--render --quick: give --out and --docs (a quick run writes to a temporary folder)")
            docs = args.docs or DOCS_PATH
            update_markdown(docs, render_table(read_results(args.out or RESULTS_PATH)))
            print(f"table written to {docs}")
            return 0

        if args.import_gpu:
            out = args.out or RESULTS_PATH
            entries = merge_entries(read_results(out) if out.exists() else [], import_gpu(args.import_gpu))
            write_results(out, entries)
            if not args.no_docs:
                update_markdown(args.docs or DOCS_PATH, render_table(entries))
            print(f"gpu entries recorded in {out}")
            return 0

        benches = select(args.only)
        scratch = Path(tempfile.mkdtemp(prefix="augforge-perf-"))
        out = args.out or (scratch / "results.json" if args.quick else RESULTS_PATH)
        docs = args.docs or (scratch / "performance.md" if args.quick else DOCS_PATH)
        entries = run_suite(
            benches,
            quick=args.quick,
            repeats=args.repeats,
            budget_s=args.budget,
            log_dir=scratch / "logs",
            progress=not args.no_progress,
        )
        if args.only and out.exists():
            entries = merge_entries(read_results(out), entries)
        write_results(out, entries)
        print_summary(entries)
        print(f"results: {out}\nscript output: {scratch / 'logs'}")
        if not args.no_docs:
            # A quick run renders into a copy of the real page, so the smoke test exercises the markers.
            update_markdown(docs, render_table(entries), source=DOCS_PATH if not docs.exists() else None)
            print(f"table: {docs}")
    except AugforgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    failed = sorted({e["benchmark"] for e in entries if e["error"]})
    if failed:
        print(f"failed: {', '.join(failed)} (see the script output above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
