"""Helpers of the benchmarks that time whole studies (bench_ray.py, bench_study_throughput.py):
run a planned study with a named executor into a folder, and read its results back comparably."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from augforge.bench.executors import ExecutionContext, make_executor
from augforge.bench.store import ResultsStore
from augforge.bench.study import run_study
from augforge.bench.trial import Trial, TrialEnv
from augforge.data.records import Dataset


def timed_study(
    executor: str,
    trials: list[Trial],
    dataset: Dataset,
    preset: Any,
    folder: Path,
    *,
    workers: int = 0,
    options: dict[str, Any] | None = None,
) -> tuple[float, ResultsStore]:
    """Run the study with ``executor`` into ``folder``; its wall time in seconds and its store.
    Exits with a message if any trial failed (a benchmark of failed trials means nothing)."""
    env = TrialEnv(progress=False, log=lambda m: None, cache_dir=folder / "generators")
    ctx = ExecutionContext(
        dataset=dataset, data_cfg=preset.data, allow_pickle=False, env=env, workers=workers, options=options or {}
    )
    store = ResultsStore(folder / "study")
    t0 = time.perf_counter()
    result = run_study(trials, store, make_executor(executor, ctx), log=lambda m: None)
    seconds = time.perf_counter() - t0
    if result.failed:
        raise SystemExit(f"{executor}: {result.failed} trial(s) failed; see {store.log_path}")
    return seconds, store


def comparable_rows(store: ResultsStore, trials: list[Trial]) -> list[str]:
    """Every trial's per-image rows as sorted JSON lines (NaN written as null, so equal compares equal)."""
    out = []
    for t in trials:
        for r in store.rows(t.key):
            clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            out.append(json.dumps(clean, sort_keys=True))
    return sorted(out)


def trial_seconds(store: ResultsStore) -> list[float]:
    """The finished trials' own times (``timings_s.total``)."""
    return [r["timings_s"]["total"] for r in store.records("ok")]
