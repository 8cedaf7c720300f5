"""Study throughput on this machine: trials one after another on all cores, against several trials
at once with fewer threads each, in the same run, on the same trials.

torch splits a convolution's sums across its threads, so the thread count is part of what a trial
computes: the two layouts give (slightly) different numbers, and the second one is a different
configuration (``train.threads`` recorded in every trial), not a faster way to the same results.
What the script measures (printed as one JSON object):

- ``sequential_s``: the study with the in-process executor, every trial on torch's default threads
  (what ``augforge bench`` does by default).
- ``parallel_s``: the same trials with ``train.threads`` = ``--threads`` (default 1) in
  ``--workers`` processes at once (default: the CPU cores divided by ``--threads``).
- ``speedup``: ``sequential_s / parallel_s``.
- ``trial_s``: the mean of the trials' own times under each layout (a trial sharing the machine with
  others takes longer; the study still ends sooner if ``speedup`` > 1).
- ``workers_equal``: whether the parallel layout's per-image metrics are the same with one worker
  as with ``--workers`` (run only with ``--check-workers``: it runs the parallel study a third time).
- ``bf16_s``, ``bf16_speedup`` (only with ``--bf16``): the parallel layout again with bfloat16
  autocast (``train.cpu_amp``), and ``sequential_s / bf16_s``; ``cpu_bf16`` says whether the CPU
  has bfloat16 instructions (without them bfloat16 runs slower than float32).
- ``allocator_speedup`` (only with ``--allocator``): the sequential layout run twice more in one
  worker process each, once with glibc's malloc as it comes (``AUGFORGE_MALLOC=system``) and once
  with freed memory kept (augforge/train/allocator.py, the default): system time / kept time. Both
  give the same numbers.
- ``default_study_wall_s``: the committed run of the default study (benchmarks/studies/default.toml:
  the ``fast`` preset, two one-thread trials at a time; benchmarks/studies/default-run), from its
  first trial's start to its last trial's end, as measured by running it.
- ``quick_study_s``: the committed run of the same design at quick's budget
  (benchmarks/studies/quick-run, trials run one after another) summed; ``quick_study_now_s``: that
  sum divided by ``allocator_speedup`` when the committed run predates the allocator setting (its
  records carry no ``allocator`` field), else the sum; ``quick_study_parallel_s``:
  ``quick_study_now_s`` divided by ``speedup``, that study projected under the parallel layout.
- ``quick_bf16_study_wall_s``: the committed run of benchmarks/studies/quick-bf16.toml
  (benchmarks/studies/quick-bf16-run, two trials at a time), first trial's start to last trial's end.

Usage::

    python benchmarks/bench_study_throughput.py [--preset quick] [--seeds 4] [--set train.epochs=3]
        [--threads 1] [--workers 2] [--check-workers] [--bf16] [--allocator]

Shortened trials (``train.epochs``) keep the run short; the ratio is one of per-step throughput,
which the number of epochs does not change.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from study_timing import comparable_rows, timed_study, trial_seconds

from augforge.bench.store import ResultsStore
from augforge.bench.study import plan_study
from augforge.bench.trial import Trial
from augforge.config import apply_overrides, get_preset, parse_set_options, split_overrides
from augforge.data.sources import load_dataset
from augforge.train.loop import cpu_has_bf16

DEFAULT_RUN = Path(__file__).parent / "studies" / "default-run" / "trials.jsonl"
QUICK_RUN = Path(__file__).parent / "studies" / "quick-run" / "trials.jsonl"
BF16_RUN = Path(__file__).parent / "studies" / "quick-bf16-run" / "trials.jsonl"


def mean_trial_s(store: ResultsStore) -> float:
    times = trial_seconds(store)
    return round(sum(times) / len(times), 2)


def quick_study_seconds() -> tuple[float | None, bool]:
    """The committed quick study's trial times summed, and whether it ran with the allocator
    setting (records from before it carry no ``allocator`` field)."""
    if not QUICK_RUN.exists():
        return None, False
    records = [json.loads(line) for line in QUICK_RUN.read_text().splitlines() if line.strip()]
    ok = [r for r in records if r.get("status") == "ok"]
    kept = all(r.get("allocator") == "glibc-kept" for r in ok)
    return round(sum(r["timings_s"]["total"] for r in ok), 1), kept


def study_span_seconds(path: Path) -> float | None:
    """Wall time of a committed study run: its first trial's start to its last trial's end."""
    if not path.exists():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        return None
    start = min(datetime.fromisoformat(r["started_at"]) for r in records)
    end = max(datetime.fromisoformat(r["finished_at"]) for r in records)
    return round((end - start).total_seconds(), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--strategy", action="append", default=[], help="strategies (default: the baseline 'none')")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="train.threads of the parallel layout")
    ap.add_argument("--workers", type=int, default=0, help="processes of the parallel layout (0: cores / threads)")
    ap.add_argument("--check-workers", action="store_true", help="also run the parallel layout with one worker")
    ap.add_argument("--bf16", action="store_true", help="also run the parallel layout with train.cpu_amp=true")
    ap.add_argument(
        "--allocator",
        action="store_true",
        help="also run the sequential layout in a worker with and without the allocator setting",
    )
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = ap.parse_args()

    cpus = os.cpu_count() or 1
    workers = args.workers or max(1, cpus // args.threads)
    preset_over, strategy_params = split_overrides(parse_set_options(args.overrides))
    sequential = apply_overrides(get_preset(args.preset), {**preset_over, "train.threads": "0"})
    parallel = apply_overrides(sequential, {"train.threads": str(args.threads)})
    bf16 = apply_overrides(parallel, {"train.cpu_amp": "true"})
    load_before = os.getloadavg()[0]
    dataset = load_dataset(sequential.data, progress=False)

    def plan(preset: Any) -> list[Trial]:
        return plan_study(
            args.strategy or ["none"],
            preset=preset,
            seeds=list(range(args.seeds)),
            fractions=[1.0],
            dataset_fingerprint=dataset.fingerprint,
            strategy_params=strategy_params,
            baseline=False,
        )

    seq_trials, par_trials = plan(sequential), plan(parallel)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        root = Path(tmp)
        seq_s, seq = timed_study("local", seq_trials, dataset, sequential, root / "sequential")
        par_s, par = timed_study("process", par_trials, dataset, parallel, root / "parallel", workers=workers)
        workers_equal = None
        if args.check_workers:
            _, one = timed_study("process", par_trials, dataset, parallel, root / "parallel-1", workers=1)
            workers_equal = comparable_rows(one, par_trials) == comparable_rows(par, par_trials)
        trial_s = {"sequential": mean_trial_s(seq), "parallel": mean_trial_s(par)}
        bf16_s = None
        if args.bf16:
            bf16_s, bf = timed_study("process", plan(bf16), dataset, bf16, root / "bf16", workers=workers)
            trial_s["bf16"] = mean_trial_s(bf)
        results_equal = comparable_rows(seq, seq_trials) == comparable_rows(par, par_trials)
        allocator: dict[str, Any] | None = None
        if args.allocator:
            allocator = {}
            for name, value in (("system", "system"), ("kept", "")):
                os.environ["AUGFORGE_MALLOC"] = value  # read by the spawned worker
                try:
                    secs, store = timed_study(
                        "process", seq_trials, dataset, sequential, root / f"alloc-{name}", workers=1
                    )
                finally:
                    os.environ.pop("AUGFORGE_MALLOC", None)
                allocator[f"{name}_s"] = round(secs, 2)
                allocator[f"{name}_rows"] = comparable_rows(store, seq_trials)
            allocator["same_results"] = allocator.pop("system_rows") == allocator.pop("kept_rows")
            allocator["speedup"] = round(allocator["system_s"] / allocator["kept_s"], 3)

    speedup = seq_s / par_s
    quick_s, quick_kept = quick_study_seconds()
    quick_now = quick_s
    if quick_s and not quick_kept:
        quick_now = round(quick_s / allocator["speedup"], 1) if allocator else None
    print(
        json.dumps(
            {
                "preset": sequential.name,
                "overrides": args.overrides,
                "trials": len(seq_trials),
                "cpu_count": cpus,
                "sequential_threads": torch.get_num_threads(),
                "parallel_threads": args.threads,
                "parallel_workers": workers,
                "sequential_s": round(seq_s, 2),
                "parallel_s": round(par_s, 2),
                "speedup": round(speedup, 3),
                "trial_s": trial_s,
                "layouts_give_equal_results": results_equal,
                "workers_equal": workers_equal,
                "allocator": allocator,
                "default_study_wall_s": study_span_seconds(DEFAULT_RUN),
                "quick_study_s": quick_s,
                "quick_study_ran_with_allocator": quick_kept,
                "quick_study_now_s": quick_now,
                "quick_study_parallel_s": round(quick_now / speedup, 1) if quick_now else None,
                "cpu_bf16": cpu_has_bf16(),
                "bf16_s": None if bf16_s is None else round(bf16_s, 2),
                "bf16_speedup": None if bf16_s is None else round(seq_s / bf16_s, 3),
                "quick_bf16_study_wall_s": study_span_seconds(BF16_RUN),
                "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
