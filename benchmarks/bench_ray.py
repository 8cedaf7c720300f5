"""Wall time of one study in-process against the same study on a local Ray instance, same run.

What it measures (printed as one JSON object):

- ``local_s``: the study with the in-process executor (trials one after another).
- ``ray_init_s``: starting a local Ray instance with ``--workers`` CPUs (once per ``augforge bench``).
- ``ray_cold_s``: the study with the Ray executor on fresh workers (each worker process imports
  torch and augforge before its first trial: what one ``augforge bench --executor ray`` pays).
- ``ray_warm_s``: the same study again on the now warm workers (what the rest of a long study sees).
- ``speedup_cold``, ``speedup_warm``: ``local_s`` over the Ray times (Ray start-up excluded).
- ``trial_seconds``: per executor, the sum of the trials' own ``timings_s.total``; with a free
  machine the Ray sum stays close to the local one, and the wall time falls by up to ``--workers``.
- ``per_image_equal``: whether every trial's per-image metrics are identical across executors.

Usage::

    python benchmarks/bench_ray.py [--preset tiny] [--strategy flip ...] [--seeds 2] [--workers 2]
        [--set train.epochs=5 ...]

Each trial uses one CPU (``ray_cpus_per_trial=1``), so ``--workers`` trials run at a time. The load
average before and after is printed: on a shared machine the numbers are only as good as it is idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import ray
from study_timing import comparable_rows, timed_study, trial_seconds

from augforge.bench.study import plan_study
from augforge.config import apply_overrides, get_preset, parse_set_options, split_overrides
from augforge.data.sources import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--strategy", action="append", default=[], help="besides the baseline 'none' (default: flip)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance = trials at a time")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = ap.parse_args()

    preset_over, strategy_params = split_overrides(parse_set_options(args.overrides))
    preset = apply_overrides(get_preset(args.preset), preset_over)
    load_before = os.getloadavg()[0]
    dataset = load_dataset(preset.data, progress=False)
    trials = plan_study(
        args.strategy or ["flip"],
        preset=preset,
        seeds=list(range(args.seeds)),
        fractions=[1.0],
        dataset_fingerprint=dataset.fingerprint,
        strategy_params=strategy_params,
    )

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        local_s, local = timed_study("local", trials, dataset, preset, root / "local")
        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray_init_s = time.perf_counter() - t0
        try:
            opts = {"ray_cpus_per_trial": 1}
            cold_s, cold = timed_study("ray", trials, dataset, preset, root / "ray-cold", options=opts)
            warm_s, warm = timed_study("ray", trials, dataset, preset, root / "ray-warm", options=opts)
        finally:
            ray.shutdown()
        reference = comparable_rows(local, trials)
        equal = comparable_rows(cold, trials) == reference and comparable_rows(warm, trials) == reference
        seconds = {
            name: round(sum(trial_seconds(s)), 2)
            for name, s in (("local", local), ("ray_cold", cold), ("ray_warm", warm))
        }

    print(
        json.dumps(
            {
                "preset": preset.name,
                "trials": len(trials),
                "strategies": sorted({t.label or t.strategy for t in trials}),
                "seeds": args.seeds,
                "workers": args.workers,
                "local_s": round(local_s, 2),
                "ray_init_s": round(ray_init_s, 2),
                "ray_cold_s": round(cold_s, 2),
                "ray_warm_s": round(warm_s, 2),
                "speedup_cold": round(local_s / cold_s, 2),
                "speedup_warm": round(local_s / warm_s, 2),
                "trial_seconds": seconds,
                "per_image_equal": equal,
                "cpu_count": os.cpu_count(),
                "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
                "versions": {"ray": ray.__version__, "python": platform.python_version()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
