"""The Ray executor on a local 2-CPU Ray instance: same per-image results as in-process, a worker killed
mid-trial is retried, user errors are recorded and not retried, an interrupted study resumes, a fitted
generator is shared by reference. One Ray instance for the module (starting one takes seconds)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")  # before augforge.bench.executors.ray_cluster is imported below

from augforge import Param, Strategy, hookimpl
from augforge.bench.executors import EXECUTORS, ExecutionContext, make_executor
from augforge.bench.store import ResultsStore
from augforge.bench.study import plan_study, run_study
from augforge.bench.trial import TrialEnv
from augforge.config import apply_overrides, get_preset
from augforge.errors import UsageError

TESTS_DIR = Path(__file__).resolve().parent


# -- strategies that also exist in the Ray workers (registered there by the setup hook below) -------
class CrashOnce:
    """Kills its whole process (as an out-of-memory kill or a segfault would) the first time it is
    called; ``marker`` records that it happened, so the retried run goes through."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, image, mask):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(3)
        return image, mask


class CrashOnceStrategy(Strategy):
    name = "ray-test-crash-once"
    description = "Kills its worker during the first training step it sees (test plugin)."
    params = (Param("marker", str, "", "file that records the crash"),)

    def build_transform(self, seed):
        return CrashOnce(self.config["marker"])


class AlwaysCrashStrategy(Strategy):
    name = "ray-test-always-crash"
    description = "Kills its worker in every run (test plugin)."

    def prepare(self, train, ctx):
        os._exit(4)


class RaisesStrategy(Strategy):
    name = "ray-test-raises"
    description = "Raises in prepare and counts its runs in a file (test plugin)."
    params = (Param("runs_file", str, "", "one line appended per run"),)

    def prepare(self, train, ctx):
        with open(self.config["runs_file"], "a") as f:
            f.write(f"{os.getpid()}\n")
        raise RuntimeError("strategy bug in prepare")


class CachedFitStrategy(Strategy):
    """Fits "a generator" (a JSON file) once per dataset into ``ctx.cache_dir`` and reuses it, as the
    DCGAN strategy does; every trial logs whether it fitted or reused."""

    name = "ray-test-cached-fit"
    description = "Caches a fake fitted generator in the generator cache (test plugin)."

    def prepare(self, train, ctx):
        path = Path(ctx.cache_dir) / f"{self.name}-{ctx.dataset_fingerprint}" / "generator.json"
        if path.exists():
            ctx.log(f"{self.name}: reused generator of pid {json.loads(path.read_text())['pid']}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"pid": os.getpid()}))
            ctx.log(f"{self.name}: fitted generator")
        return list(train)


class RayTestPlugin:
    @hookimpl
    def register_strategies(self, register):
        for cls in (CrashOnceStrategy, AlwaysCrashStrategy, RaisesStrategy, CachedFitStrategy):
            register(cls)


def register_in_worker() -> None:
    """Ray's worker_process_setup_hook: in-process plugins do not travel to workers by themselves."""
    from augforge.plugins import pm

    if not pm.has_plugin("ray-test-plugin"):
        pm.register(RayTestPlugin(), name="ray-test-plugin")


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_instance():
    path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={
            "env_vars": {"PYTHONPATH": path},
            "worker_process_setup_hook": f"{Path(__file__).stem}.register_in_worker",
        },
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def plugin(register_plugin):
    with register_plugin(RayTestPlugin(), "ray-test-plugin"):
        yield


@pytest.fixture(scope="module")
def preset():
    # Twelve epochs: real, non-empty predictions on the tiny phantom in a few seconds per trial.
    return apply_overrides(get_preset("tiny"), {"train.epochs": "12"})


@pytest.fixture(scope="module")
def short(preset):
    """One epoch, for tests about what happens around training rather than its numbers."""
    return apply_overrides(preset, {"train.epochs": "1"})


@pytest.fixture(scope="module")
def dataset(preset):
    from augforge.data.sources import load_dataset

    return load_dataset(preset.data, progress=False)


def context(dataset, preset, tmp_path: Path, lines: list[str] | None = None, **options) -> ExecutionContext:
    env = TrialEnv(
        progress=False, log=(lines.append if lines is not None else (lambda m: None)), cache_dir=tmp_path / "generators"
    )
    return ExecutionContext(dataset=dataset, data_cfg=preset.data, allow_pickle=False, env=env, options=options)


def plan(dataset, preset, strategies, seeds=(0,), params=None):
    return plan_study(
        list(strategies),
        preset=preset,
        seeds=list(seeds),
        fractions=[1.0],
        dataset_fingerprint=dataset.fingerprint,
        strategy_params=params or {},
        baseline=False,
    )


def comparable(rows):
    """Per-image rows with NaN (an undefined HD95) made comparable."""
    return sorted(
        json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}, sort_keys=True)
        for r in rows
    )


# -- tests -----------------------------------------------------------------------------------------
def test_ray_gives_the_in_process_results_and_resumes_after_an_interrupt(ray_instance, dataset, preset, tmp_path):
    trials = plan(dataset, preset, ["none", "flip"], seeds=(0, 1))
    local = ResultsStore(tmp_path / "local")
    run_study(trials, local, make_executor("local", context(dataset, preset, tmp_path)), log=lambda m: None)

    # Interrupt the driver as soon as the first trial is committed (as Ctrl-C would), then rerun.
    store = ResultsStore(tmp_path / "ray")
    executor = make_executor("ray", context(dataset, preset, tmp_path))

    def commit_then_interrupt(outcome):
        store.commit(outcome.record, outcome.rows)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executor.run(trials, commit_then_interrupt)
    assert len(store.records()) == 1
    logged: list[str] = []
    result = run_study(trials, store, make_executor("ray", context(dataset, preset, tmp_path)), log=logged.append)
    assert result.skipped == 1 and len(result.outcomes) == 3 and result.failed == 0
    assert "1 of 4 trials already finished" in logged[0]

    for t in trials:
        assert store.record(t.key)["status"] == "ok"
        assert comparable(store.rows(t.key)) == comparable(local.rows(t.key)), t.describe()
        assert store.record(t.key)["executor"]["name"] == "ray"
    assert sum(r["pred_px"] for t in trials for r in local.rows(t.key)) > 0  # not an all-empty tie


def test_worker_deaths_are_retried_and_user_errors_are_not(ray_instance, plugin, dataset, short, tmp_path):
    marker, runs_file = tmp_path / "crashed", tmp_path / "runs.txt"
    trials = plan(
        dataset,
        short,
        ["ray-test-crash-once", "ray-test-always-crash", "ray-test-raises"],
        params={"ray-test-crash-once": {"marker": str(marker)}, "ray-test-raises": {"runs_file": str(runs_file)}},
    )
    store = ResultsStore(tmp_path / "study")
    lines: list[str] = []
    executor = make_executor("ray", context(dataset, short, tmp_path, lines, ray_max_retries=1))
    result = run_study(trials, store, executor, log=lambda m: None)

    assert len(result.outcomes) == 3  # every trial recorded, the study not stopped by any of them
    by_strategy = {r["strategy"]: r for r in store.records()}
    assert marker.exists()  # the first run of the trial really died mid-training
    assert by_strategy["ray-test-crash-once"]["status"] == "ok"
    assert len(store.rows(by_strategy["ray-test-crash-once"]["key"])) == len(dataset.test)

    crashed = by_strategy["ray-test-always-crash"]
    assert crashed["status"] == "failed" and "Ray worker died" in crashed["error"] and "2 run(s)" in crashed["error"]

    raised = by_strategy["ray-test-raises"]
    assert raised["status"] == "failed" and raised["error"] == "RuntimeError: strategy bug in prepare"
    assert len(runs_file.read_text().splitlines()) == 1  # an exception in user code is not retried
    assert "strategy bug in prepare" in store.log_path.read_text()  # its traceback is in run.log


def test_a_group_shares_one_fit_and_workers_can_load_the_data(ray_instance, plugin, dataset, short, tmp_path):
    trials = plan(dataset, short, ["ray-test-cached-fit", "ray-test-cached-fit+flip"], seeds=(0, 1))
    store = ResultsStore(tmp_path / "study")
    executor = make_executor("ray", context(dataset, short, tmp_path, ray_dataset="load"))
    result = run_study(trials, store, executor, log=lambda m: None)
    assert result.failed == 0
    log = store.log_path.read_text()
    assert log.count("ray-test-cached-fit: fitted generator") == 1
    assert log.count("ray-test-cached-fit: reused generator") == 3


def test_the_fit_travels_by_reference_to_a_node_without_it(ray_instance, plugin, dataset, short, tmp_path):
    """Two cache folders stand for the disks of two nodes: the group's first trial fits on node A, and
    what it cached reaches node B through the object store, not through the disk."""
    from augforge.bench.executors.ray_cluster import _remote_trial

    first, second = plan(dataset, short, ["ray-test-cached-fit"], seeds=(0, 1))
    env = TrialEnv(progress=False, log=lambda m: None)
    data = ray.put(dataset)
    node_a, node_b = tmp_path / "node-a", tmp_path / "node-b"

    leader = ray.get(
        _remote_trial.remote(first, TrialEnv(cache_dir=node_a, progress=False, log=env.log), data, None, True)
    )
    assert leader.outcome.ok
    assert any("fitted generator" in line for line in leader.outcome.log_lines)
    name = f"ray-test-cached-fit-{dataset.fingerprint}/generator.json"
    assert set(leader.shared_cache) == {name}
    assert (node_a / name).is_file() and not list(node_a.glob(".ray-*"))  # kept on A, private folder gone

    follower = ray.get(
        _remote_trial.remote(
            second, TrialEnv(cache_dir=node_b, progress=False, log=env.log), data, ray.put(leader.shared_cache), False
        )
    )
    assert follower.outcome.ok
    assert any("reused generator" in line for line in follower.outcome.log_lines)
    assert (node_b / name).read_bytes() == (node_a / name).read_bytes()


def test_bench_command_runs_on_ray(ray_instance, tmp_path, capsys):
    from augforge.cli import main

    out = tmp_path / "study"
    code = main(
        [
            "bench",
            "--strategy",
            "none",
            "--preset",
            "tiny",
            "--set",
            "train.epochs=1",
            "--executor",
            "ray",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code in (0, None), capsys.readouterr()
    record = json.loads((out / "trials.jsonl").read_text().splitlines()[0])
    assert record["status"] == "ok" and record["executor"]["name"] == "ray"
    assert "ray: using this process's Ray connection" in capsys.readouterr().out


def test_a_trial_no_node_can_take_is_reported(ray_instance, dataset, preset, tmp_path):
    lines: list[str] = []
    executor = make_executor("ray", context(dataset, preset, tmp_path, lines))
    executor._warn_if_no_node_fits(2, 0)
    assert lines == []
    executor._warn_if_no_node_fits(3, 0)
    executor._warn_if_no_node_fits(1, 1)
    assert len(lines) == 2 and "no node has 3 CPUs and 0 GPUs" in lines[0] and "1 GPUs" in lines[1]


# -- no Ray instance needed ------------------------------------------------------------------------
def test_options_are_validated(dataset, preset, tmp_path):
    with pytest.raises(UsageError, match="ray_cpu_per_trial.*unknown"):
        make_executor("ray", context(dataset, preset, tmp_path, ray_cpu_per_trial=2))
    with pytest.raises(UsageError, match="executor.ray_max_retries: expected an integer"):
        make_executor("ray", context(dataset, preset, tmp_path, ray_max_retries="many"))
    with pytest.raises(UsageError, match="ray_dataset"):
        make_executor("ray", context(dataset, preset, tmp_path, ray_dataset="nfs"))
    with pytest.raises(UsageError, match="ray_runtime_env: not JSON"):
        make_executor("ray", context(dataset, preset, tmp_path, ray_runtime_env="{env_vars"))
    ex = make_executor(
        "ray",
        context(
            dataset,
            preset,
            tmp_path,
            ray_cpus_per_trial="2",
            ray_max_retries="0",
            ray_share_generators="false",
            ray_address=" ",
            process_unused=1,
        ),
    )
    assert (ex.options.cpus_per_trial, ex.options.max_retries, ex.options.share_generators, ex.options.address) == (
        2.0,
        0,
        False,
        None,
    )


def test_a_thread_count_other_than_the_local_one_is_said(dataset, preset, tmp_path, monkeypatch):
    """Threads change a CPU trial's numbers: a trial left at train.threads 0 that gets another count on
    Ray than locally is named in the log; a trial with its own count is not."""
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    free = apply_overrides(preset, {"train.threads": "0"})
    lines: list[str] = []
    ex = make_executor("ray", context(dataset, free, tmp_path, lines))
    ex._note_threads(plan(dataset, free, ["none"]), gpus=0.0)
    assert len(lines) == 1 and "train with 1 thread(s) each" in lines[0] and "local executor uses 2" in lines[0]
    lines.clear()
    ex._note_threads(plan(dataset, free, ["none"]), gpus=1.0)  # GPU trials: threads do not decide their numbers
    ex = make_executor("ray", context(dataset, free, tmp_path, lines, ray_cpus_per_trial="2"))
    ex._note_threads(plan(dataset, free, ["none"]), gpus=0.0)  # the same count as locally
    ex._note_threads(plan(dataset, preset, ["none"]), gpus=0.0)  # the preset's own train.threads (1)
    assert lines == []


def test_without_ray_the_error_says_how_to_install_it(dataset, preset, tmp_path, monkeypatch):
    monkeypatch.delitem(EXECUTORS, "ray", raising=False)
    monkeypatch.delitem(sys.modules, "augforge.bench.executors.ray_cluster", raising=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UsageError, match=r"pip install 'augforge\[ray\]'"):
        make_executor("ray", context(dataset, preset, tmp_path))


def test_a_wrong_cluster_address_fails_fast():
    from augforge.bench.executors.ray_cluster import _check_reachable

    with pytest.raises(UsageError, match="--ray-address 127.0.0.1:1: nothing answers there"):
        _check_reachable("127.0.0.1:1")
    _check_reachable("auto")  # left to Ray: the cluster this machine belongs to
