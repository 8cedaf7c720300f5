"""Interruption campaign: kill, interrupt, race and corrupt a small study, and check what it leaves.

Each check runs the real command line (``python -m augforge bench``) in child processes on a tiny
study (baseline + flip, 2 seeds, 3 epochs) and compares the finished folder with an uninterrupted
reference run, row for row of ``per_image.csv``:

- **kill**: SIGKILL at a random moment (dataset build, training, report), then rerun to completion;
- **interrupt**: SIGINT (Ctrl-C) at a random moment: exit 130 and a one-line message, then rerun;
- **race**: a second run on the same folder while the first runs: refused (exit 2), the first
  finishes with every trial;
- **corrupt**: bytes of a cached dataset array changed: the next run refuses it naming the file
  (exit 1); after deleting the folder as told, the rerun rebuilds and gives the reference results.

After every rerun the folder must hold no temporary file, every ``trials.jsonl`` line must parse,
and the per-image rows must equal the reference's. Prints one JSON object (and writes it with
``--json PATH``); exit 1 when a check fails.

    python benchmarks/campaign.py                 # 6 kills + 4 interrupts + race + corrupt, ~5 min
    python benchmarks/campaign.py --rounds 2      # shorter
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STUDY = [
    "--strategy",
    "flip",
    "--preset",
    "tiny",
    "--seeds",
    "2",
    "--set",
    "train.epochs=3",
    "--no-progress",
    "--no-samples",
]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "augforge", "bench", *STUDY, *extra, "--out", str(out)]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "AUGFORGE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def _rows(out: Path) -> list[tuple]:
    """per_image.csv as sorted tuples (the trial key first): comparable across runs."""
    with (out / "per_image.csv").open(newline="") as f:
        return sorted(tuple(r.values()) for r in csv.DictReader(f))


def _problems(out: Path, reference: list[tuple]) -> list[str]:
    problems = []
    leftovers = [str(p.relative_to(out)) for p in out.rglob(".*.tmp")]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    for n, line in enumerate((out / "trials.jsonl").read_text().splitlines(), 1):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"trials.jsonl:{n} does not parse")
    if not (out / "report.md").is_file():
        problems.append("no report.md")
    if _rows(out) != reference:
        problems.append("per-image rows differ from the uninterrupted run")
    return problems


def _run(out: Path, cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(out), check=False, env=_env(cache), capture_output=True, text=True, timeout=timeout)


def interrupted(
    work: Path, reference: list[tuple], duration: float, sig: int, rng: random.Random, k: int
) -> dict[str, Any]:
    """Start a run in a fresh folder and cache, send ``sig`` at a random moment, then rerun."""
    out, cache = work / f"run-{k}", work / f"cache-{k}"
    at = rng.uniform(0.05, 1.0) * duration
    proc = subprocess.Popen(_cmd(out), env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(at)
    finished_first = proc.poll() is not None
    if not finished_first:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    entry: dict[str, Any] = {
        "signal": signal.Signals(sig).name,
        "at_s": round(at, 2),
        "exit": proc.returncode,
        "finished_before_the_signal": finished_first,
        "problems": [],
    }
    if sig == signal.SIGINT and not finished_first:
        last = stderr.strip().splitlines()[-1:] or [""]
        entry["message"] = last[0]
        if proc.returncode != 130 or "Traceback" in stderr:
            entry["problems"].append(f"Ctrl-C gave exit {proc.returncode}, stderr ending {last[0]!r}")
    done = _run(out, cache)
    entry["rerun_exit"] = done.returncode
    if done.returncode != 0:
        entry["problems"].append(f"rerun exit {done.returncode}: {done.stderr.strip()[-300:]}")
    else:
        entry["problems"] += _problems(out, reference)
    return entry


def race(work: Path, reference: list[tuple]) -> dict[str, Any]:
    """The first run trains longer (30 epochs) than the reference, so that the second, which needs
    seconds to start, surely meets it; its rows are checked for completeness, not against the
    reference."""
    out, cache = work / "race", work / "cache-race"
    first = subprocess.Popen(
        _cmd(out, "--set", "train.epochs=30"),
        env=_env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ((out / ".lock").is_file() and (out / ".lock").read_text().strip()):
        if first.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    second = _run(out, cache)
    first.communicate(timeout=600)
    entry = {
        "first_exit": first.returncode,
        "second_exit": second.returncode,
        "second_message": (second.stderr.strip().splitlines() or [""])[-1],
        "problems": [],
    }
    if second.returncode != 2 or "in use by another augforge run" not in second.stderr:
        entry["problems"].append("the second run was not refused")
    if first.returncode != 0:
        entry["problems"].append(f"the first run exited {first.returncode}")
    else:
        ok = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines() if line.strip()]
        if len(_rows(out)) != len(reference) or sum(r["status"] == "ok" for r in ok) != 4:
            entry["problems"].append("the first run's folder is incomplete")
        if list(out.rglob(".*.tmp")):
            entry["problems"].append("temporary files left")
    return entry


def corrupt(work: Path, reference: list[tuple]) -> dict[str, Any]:
    out, cache = work / "corrupt", work / "cache-corrupt"
    entry: dict[str, Any] = {"problems": []}
    if _run(out, cache).returncode != 0:
        entry["problems"].append("the first run failed")
        return entry
    (target,) = cache.glob("datasets/*/hu.npy")
    raw = bytearray(target.read_bytes())
    raw[-4096:] = bytes(4096) if any(raw[-4096:]) else b"\x01" * 4096
    target.write_bytes(bytes(raw))
    again = _run(work / "corrupt-2", cache)
    entry["exit_on_corrupt_cache"] = again.returncode
    entry["message"] = (again.stderr.strip().splitlines() or [""])[-1]
    if again.returncode == 0 or "hu.npy: changed since the dataset was built" not in again.stderr:
        entry["problems"].append("the changed cache was not refused")
    shutil.rmtree(target.parent)  # as the message says
    rebuilt = _run(work / "corrupt-2", cache)
    if rebuilt.returncode != 0:
        entry["problems"].append(f"the rebuild failed: {rebuilt.stderr.strip()[-300:]}")
    else:
        entry["problems"] += _problems(work / "corrupt-2", reference)
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="SIGKILL rounds (SIGINT: two thirds as many)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the moments of the signals")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="augforge-campaign-"))
    try:
        t0 = time.perf_counter()
        ref = _run(work / "reference", work / "cache-reference")
        duration = time.perf_counter() - t0
        if ref.returncode != 0:
            raise SystemExit(f"the reference run failed: {ref.stderr[-500:]}")
        reference = _rows(work / "reference")
        kills = [interrupted(work, reference, duration, signal.SIGKILL, rng, k) for k in range(args.rounds)]
        ints = [
            interrupted(work, reference, duration, signal.SIGINT, rng, 100 + k)
            for k in range(max(1, 2 * args.rounds // 3))
        ]
        result = {
            "study": " ".join(["augforge", "bench", *STUDY]),
            "reference_s": round(duration, 1),
            "reference_rows": len(reference),
            "kill": kills,
            "interrupt": ints,
            "race": race(work, reference),
            "corrupt": corrupt(work, reference),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checks = [*result["kill"], *result["interrupt"], result["race"], result["corrupt"]]
    result["checks"] = len(checks)
    result["failed"] = sum(1 for c in checks if c["problems"])
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
