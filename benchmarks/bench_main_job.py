"""The main job, ``augforge bench --strategy dcgan``, as a user runs it: whole-process wall time and
the peak memory of its process tree, from a cold cache.

The job runs as a child process with a fresh temporary ``AUGFORGE_CACHE`` (so it builds the dataset
and fits the DCGAN from scratch, as on a new machine) and a temporary ``--out`` folder. Printed as
one JSON object:

- ``wall_s``: from starting the process to its exit (interpreter start, imports, dataset build,
  both trials -- ``dcgan`` and the baseline ``none`` -- and the report). Goal: <= 600 s.
- ``cpu_s``: user + system CPU seconds of the job and every process it waited for.
- ``peak_gib``: peak memory of the process tree. Goal: <= 4 GiB. It is the larger of
  ``peak_tree_pss_gib`` -- the tree's proportional set size (shared pages split between the processes
  sharing them, so forked workers are not counted twice), sampled every ``--interval`` seconds
  from ``/proc`` -- and ``largest_process_maxrss_gib``, the kernel's exact peak of the largest
  single process (``getrusage(RUSAGE_CHILDREN)``), which catches a spike between two samples.
  ``peak_tree_rss_gib`` (plain sum of resident sizes, shared pages counted in each process) is an
  upper bound, printed beside it.
- ``trials``: each trial's own phases (``prepare`` = generator fit + synthesis, ``train``,
  ``evaluate``) and peak memory, from the study's ``trials.jsonl``; ``outside_trials_s`` is the
  rest of the wall time (start-up, dataset build, report).

Usage::

    python benchmarks/bench_main_job.py                   # quick preset: the README's main job
    python benchmarks/bench_main_job.py --preset tiny     # the same pipeline in seconds
    python benchmarks/bench_main_job.py --set dcgan.epochs=10 --keep runs/main-job
    python benchmarks/bench_main_job.py --data ../shared/data/lidc-idri-slices   # on real CT crops

``max_trial_s`` is the longest single trial (its ``timings_s.total``); on the LIDC per-slice export
the goal is a ``quick`` trial in at most 3 minutes on 2 cores (``run_all.py --only lidc_trial``).
``generator_fit_s`` is the one-time DCGAN fit inside the first ``dcgan`` trial (from the job's log
line ``dcgan: fitted in N s``; later trials on the same training set reuse the fitted generator), and
``max_trial_without_fit_s`` the longest trial with it taken out.

Where ``/proc`` is missing (not Linux) only the getrusage figure is available.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

GOALS = {"wall_s": 600.0, "peak_gib": 4.0}
GIB = 2**30
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant, from the parent ids in ``/proc/<pid>/stat`` (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # the process ended between listing and reading
            continue
        # The command name in parentheses may contain spaces: the fields after the last ')' are fixed.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def process_memory(pid: int) -> tuple[int, int | None]:
    """(RSS, PSS) of one process in bytes; PSS is None where ``smaps_rollup`` cannot be read."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines() if ":" in line
        )
        return int(fields["Rss"].split()[0]) * 1024, int(fields["Pss"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE, None
    except (OSError, ValueError, IndexError):
        return 0, None


class TreeMemorySampler:
    """Peak summed RSS and PSS of a process tree, sampled from ``/proc`` in a background thread.

    Use as a context manager around the child's lifetime; ``available`` is False off Linux.
    """

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.available = Path("/proc/self/stat").exists()
        self.peak_rss = 0
        self.peak_pss: int | None = None
        self.peak_processes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tree-memory")

    def sample(self) -> None:
        """Take one sample of the whole tree now."""
        rss_sum, pss_sum, pss_known, pids = 0, 0, True, process_tree(self.pid)
        for pid in pids:
            rss, pss = process_memory(pid)
            rss_sum += rss
            pss_known &= pss is not None
            pss_sum += pss or 0
        self.peak_rss = max(self.peak_rss, rss_sum)
        if pss_known:
            self.peak_pss = max(self.peak_pss or 0, pss_sum)
        self.peak_processes = max(self.peak_processes, len(pids))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> None:
        if self.available:
            self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()


def _children_usage() -> tuple[float, int]:
    """(CPU seconds, largest single ru_maxrss in bytes) of the processes waited for so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss * scale


def read_trials(out: Path) -> list[dict[str, Any]]:
    """Per-trial phases and peak memory from the study's ``trials.jsonl`` (empty if missing)."""
    path = out / "trials.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        rows.append(
            {
                "strategy": r.get("strategy"),
                "seed": r.get("seed"),
                "status": r.get("status"),
                "timings_s": r.get("timings_s", {}),
                "peak_rss_mb": r.get("memory", {}).get("peak_rss_mb"),
                "data_wait_share": r.get("training", {}).get("data_wait_share"),
            }
        )
    return rows


def run_main_job(job_args: list[str], workdir: Path, interval: float) -> dict[str, Any]:
    """Run ``augforge bench JOB_ARGS --out WORKDIR/study`` with ``AUGFORGE_CACHE=WORKDIR/cache``.

    Returns the measurements; raises SystemExit with the job's last output lines if it fails.
    """
    out, cache, log_path = workdir / "study", workdir / "cache", workdir / "job.log"
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AUGFORGE_CACHE": str(cache)}
    # `python -m augforge` is the console script's code path without depending on where pip put it.
    cmd = [sys.executable, "-m", "augforge", "bench", *job_args, "--out", str(out), "--no-progress"]
    cpu0, _ = _children_usage()
    load_before = os.getloadavg()[0]
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = TreeMemorySampler(proc.pid, interval)
        with sampler:
            code = proc.wait()
        wall = time.perf_counter() - t0
    cpu1, maxrss = _children_usage()
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"main job exited with status {code}: {' '.join(cmd)}\n" + "\n".join(tail))

    trials = read_trials(out)
    fits = re.findall(r"dcgan: fitted in ([0-9.]+) s", log_path.read_text(errors="replace"))
    fit_s = round(sum(float(f) for f in fits), 2)
    in_trials = sum(t["timings_s"].get("total", 0.0) for t in trials)
    pss = sampler.peak_pss
    sampled = pss if pss is not None else sampler.peak_rss
    return {
        "command": ["augforge", "bench", *job_args],
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu1 - cpu0, 2),
        "peak_gib": round(max(sampled, maxrss) / GIB, 3),
        "peak_tree_pss_gib": None if pss is None else round(pss / GIB, 3),
        "peak_tree_rss_gib": round(sampler.peak_rss / GIB, 3),
        "largest_process_maxrss_gib": round(maxrss / GIB, 3),
        "peak_processes": sampler.peak_processes,
        "memory_samples": sampler.samples,
        "sample_interval_s": interval,
        "trials": trials,
        "trials_s": round(in_trials, 2),
        "max_trial_s": round(max((t["timings_s"].get("total", 0.0) for t in trials), default=0.0), 2),
        "generator_fit_s": fit_s,
        "max_trial_without_fit_s": round(
            max(
                (t["timings_s"].get("total", 0.0) - (fit_s if t["strategy"] == "dcgan" else 0.0) for t in trials),
                default=0.0,
            ),
            2,
        ),
        "outside_trials_s": round(wall - in_trials, 2),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategy", action="append", default=[], help="strategy to bench (default: dcgan)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--data", help="passed on to `augforge bench --data` (default: the preset's dataset)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="passed on to `augforge bench --set`",
    )
    ap.add_argument("--interval", type=float, default=0.2, help="memory sampling interval, seconds")
    ap.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="run in DIR and keep the study folder and the job's log (default: a temporary folder)",
    )
    args = ap.parse_args(argv)

    job_args = [a for s in (args.strategy or ["dcgan"]) for a in ("--strategy", s)]
    job_args += ["--preset", args.preset, *(a for o in args.overrides for a in ("--set", o))]
    if args.data:
        if not Path(args.data).exists():
            raise SystemExit(f"--data {args.data}: no such file or folder")
        job_args += ["--data", args.data]
    if args.keep is not None:
        if args.keep.exists() and any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep}: the folder is not empty; a cold run needs an empty one")
        workdir = args.keep
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="augforge-main-job-"))
    try:
        result = run_main_job(job_args, workdir, args.interval)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        json.dumps(
            {
                "preset": args.preset,
                **result,
                "goals": {"wall_s<=": GOALS["wall_s"], "peak_gib<=": GOALS["peak_gib"]},
                "within_goals": result["wall_s"] <= GOALS["wall_s"] and result["peak_gib"] <= GOALS["peak_gib"],
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
