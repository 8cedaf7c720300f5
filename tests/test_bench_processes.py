"""Studies across processes: SIGKILL mid-study then resume; the process-pool executor."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from augforge.bench.store import PER_IMAGE_COLUMNS

_RUN = "import sys; from augforge.cli import main; sys.exit(main(sys.argv[1:]))"


def _records(out: Path) -> list[dict]:
    path = out / "trials.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _check_files_valid(out: Path) -> None:
    records = _records(out)  # every line parses
    with (out / "per_image.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == PER_IMAGE_COLUMNS
        rows = list(reader)
    finished = {r["key"] for r in records if r["status"] == "ok"}
    assert finished <= {r["trial"] for r in rows}


@pytest.mark.slow
def test_sigkill_mid_study_then_resume(tmp_path):
    out = tmp_path / "study"
    # Short trials (3 epochs), still seconds each: the 20 ms polling below kills between trials.
    argv = [
        sys.executable,
        "-c",
        _RUN,
        "bench",
        "--strategy",
        "none",
        "--preset",
        "tiny",
        "--seeds",
        "3",
        "--set",
        "train.epochs=3",
        "--out",
        str(out),
        "--no-progress",
    ]
    env = dict(os.environ)  # the session's temporary AUGFORGE_CACHE

    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not _records(out):
            assert proc.poll() is None, f"study ended before the kill: {proc.communicate()}"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    before = _records(out)
    assert 1 <= len(before) < 3, "the kill should land between the first and the last trial"
    _check_files_valid(out)
    stamps = {r["key"]: r["finished_at"] for r in before}

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} of 3 trials already finished" in done.stdout
    after = _records(out)
    assert len(after) == 3 and all(r["status"] == "ok" for r in after)
    for key, stamp in stamps.items():  # the finished trials were not recomputed
        assert next(r for r in after if r["key"] == key)["finished_at"] == stamp
    _check_files_valid(out)
    with (out / "leaderboard.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[1][1] == "none" and rows[1][2] == "3"


@pytest.mark.slow
def test_results_do_not_depend_on_the_executor_or_the_worker_count(tmp_path):
    """torch splits sums across threads, so a trial's numbers depend on its thread count: it must come
    from the trial's settings (train.threads 0: torch's default, as in this process), never from how
    many workers share the machine. Two trials, in process, in one worker and in two at once."""
    import torch

    from augforge.bench.executors import ExecutionContext, make_executor
    from augforge.bench.study import plan_study
    from augforge.bench.trial import TrialEnv
    from augforge.config import apply_overrides, get_preset
    from augforge.data.sources import load_dataset

    preset = apply_overrides(get_preset("tiny"), {"train.epochs": "2", "train.threads": "0"})
    dataset = load_dataset(preset.data, progress=False)
    trials = plan_study(["none"], preset=preset, seeds=[0, 1], fractions=[1.0], dataset_fingerprint=dataset.fingerprint)
    runs = {}
    for name, workers in (("local", 0), ("process", 1), ("process", 2)):
        ctx = ExecutionContext(
            dataset=dataset,
            data_cfg=preset.data,
            allow_pickle=False,
            workers=workers,
            env=TrialEnv(progress=False, log=lambda m: None),
        )
        outcomes = []
        make_executor(name, ctx).run(trials, outcomes.append)
        assert [o.status for o in outcomes] == ["ok", "ok"], [o.record.get("error") for o in outcomes]
        runs[(name, workers)] = {o.record["key"]: o for o in outcomes}
    expected = runs[("local", 0)]
    for where, outcomes in runs.items():
        assert outcomes.keys() == expected.keys()
        for key, outcome in outcomes.items():
            assert outcome.record["threads"] == torch.get_num_threads(), where
            assert json.dumps(outcome.rows) == json.dumps(expected[key].rows), (where, key)


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_workers_end_when_the_study_process_is_killed(tmp_path):
    """SIGKILL the study mid-trial: its workers must not go on training trials nobody will collect."""
    argv = [sys.executable, "-c", _RUN, "bench", "--strategy", "none", "--preset", "tiny", "--seeds", "2"]
    # Trials long enough that a worker left behind would still be training when the test looks.
    argv += ["--set", "train.epochs=400", "--executor", "process", "--workers", "2"]
    argv += ["--out", str(tmp_path / "study"), "--no-progress", "--no-baseline"]
    proc = subprocess.Popen(argv, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while len(workers) < 2:  # the pool's resource tracker is a child too; workers come on top
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the workers did not start"
            workers = {
                p
                for p in _children(proc.pid)
                if "spawn_main" in (Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"))
            }
            time.sleep(0.1)
        time.sleep(3)  # the workers have loaded the data and are training
        assert all(_alive(p) for p in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in workers if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} still running 15 s after the study process was killed"


@pytest.mark.parametrize("after_s", [0.3, 1.0, 2.0])
def test_ctrl_c_while_the_command_line_loads_is_one_line_and_exit_130(tmp_path, after_s):
    """Loading imports torch for seconds; a Ctrl-C then used to print a traceback (or abort in C++)."""
    argv = [
        sys.executable,
        "-m",
        "augforge",
        "bench",
        "--strategy",
        "flip",
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "--no-samples",
    ]
    # A shell's background job ignores SIGINT, and a child inherits that: give it a terminal's default.
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err


def test_importing_the_package_is_light_so_ctrl_c_is_caught_from_the_start():
    """``python -m augforge`` and the console script import the package before augforge.launch can
    hold Ctrl-C; numpy or torch imported there would leave a window for a traceback (seen under load)."""
    code = "import sys, augforge; print(sorted(m for m in ('numpy', 'torch', 'pluggy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
