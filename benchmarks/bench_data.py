"""Data-layer benchmark: lidc-phantom generation speed, cold build and cached reload (the first
reload, which hashes every file, and a later one, which finds them checked).

Runs in a fresh temporary cache, so "cold" includes parsing the LIDC annotations once. Prints
one JSON object. Wall-clock times on a shared machine include waiting for the CPU: the CPU time
(this process and its worker processes) is printed beside each; on an idle machine with W
workers, wall ~ CPU / W. ``AUGFORGE_DATA_WORKERS=1`` measures the single-process build.

    python benchmarks/bench_data.py                 # the default dataset (quick preset)
    python benchmarks/bench_data.py --preset tiny   # the tests' dataset
    python benchmarks/bench_data.py --physics ct    # CT physics at two sites (every slice twice)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    """CPU seconds of this process and of its finished worker processes."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn):
    w, c = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - w, _cpu() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--size", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--physics", choices=("v4", "ct"), default="v4", help="lidc-phantom's imaging model")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="augforge-bench-data-")
    os.environ["AUGFORGE_CACHE"] = tmp  # before augforge computes any cache path
    from augforge.config import get_preset
    from augforge.data.processing import cache, parallel
    from augforge.data.sources import lidc, load_dataset

    cfg = get_preset(args.preset).data
    cfg = dataclasses.replace(cfg, seed=args.seed, physics=args.physics, **({"size": args.size} if args.size else {}))
    n = cfg.n_train + cfg.n_test + cfg.n_healthy
    try:
        _, index_wall, index_cpu = _timed(lidc.read_nodules)
        ds, cold_wall, cold_cpu = _timed(lambda: load_dataset(cfg, progress=False))
        # A build's files are re-hashed at the next load (they changed within RACY_NS of it); wait
        # that out (not timed), so the first reload checks every file and vouches for it, as the
        # first trial after a build does, and the second is what every later trial pays.
        time.sleep(cache.RACY_NS / 1e9)
        _, reload_wall, reload_cpu = _timed(lambda: load_dataset(cfg, progress=False))
        _, checked_wall, checked_cpu = _timed(lambda: load_dataset(cfg, progress=False))
        size_mb = sum(f.stat().st_size for f in Path(ds.meta["cache"]).iterdir()) / 2**20
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "dataset": ds.name,
                "preset": args.preset,
                "size": cfg.size,
                "physics": args.physics,
                "slices": n,
                "train_test_healthy": [len(ds.train), len(ds.test), len(ds.healthy)],
                "shifted_and_train_shifted": [len(ds.shifted), len(ds.train_shifted)],
                # Cold = parse the LIDC annotations + generate + preprocess + write the cache.
                "cold_build_s": round(index_wall + cold_wall, 2),
                "cold_build_cpu_s": round(index_cpu + cold_cpu, 2),
                "lidc_parse_s": round(index_wall, 2),
                "slices_per_s": round(n / cold_wall, 1),
                "slices_per_cpu_s": round(n / cold_cpu, 1),
                # First reload: every array hashed against the manifest. Later reloads: only files
                # whose size, inode or times moved since they were checked (augforge.data.processing.cache).
                "reload_s": round(reload_wall, 2),
                "reload_cpu_s": round(reload_cpu, 2),
                "reload_checked_s": round(checked_wall, 2),
                "reload_checked_cpu_s": round(checked_cpu, 2),
                "cache_mb": round(size_mb, 1),
                "goals": {"cold_build_s": 60, "reload_s": 3},
                "workers": parallel.workers_for(n),
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
