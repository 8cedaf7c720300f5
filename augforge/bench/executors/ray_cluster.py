"""Ray executor: the trials of a study as Ray tasks, on one machine or on a cluster.

``--executor ray`` sends every trial to Ray as one task that declares its resources (CPUs per trial;
one GPU per trial when the cluster has GPUs). Outcomes come back to this process as trials finish
(``ray.wait``) and only this process writes the results store, exactly as with the local executor.

What travels to the workers, and why
    The dataset is put into Ray's object store once and passed to every task by reference
    (``ray_dataset="object-store"``, the default): workers need no copy of the data files and no
    shared disk; each node fetches the arrays once and its tasks read them from shared memory
    without copying. ``ray_dataset="load"`` makes each worker process load the dataset itself
    from the data configuration (the data source must then exist on every node, the embedded
    phantom always does) and check its fingerprint, as the process executor does.

Fitted generators (``ray_share_generators=True``)
    A strategy with an offline step (DCGAN) caches what it fits in ``PrepareContext.cache_dir``.
    Trials whose offline parts and settings are identical (say ``dcgan`` and ``dcgan+affine``, all
    seeds, train fraction 1) form a group: its first trial runs alone, what it added to its cache
    comes back as bytes, is put into the object store once, and is written into the local cache
    of every node that runs one of the group's other trials before they start, so those load the
    generator instead of fitting it again, with or without a shared disk. A group's other trials
    wait for its first one; a strategy whose fit depends on the trial seed (``dcgan.gen_seed=None``)
    gains nothing from that wait, so turn sharing off for such studies.

Faults
    A task whose worker process dies (killed, out of memory, a crash in native code) is run again up
    to ``ray_max_retries`` times, then recorded as a failed trial. An exception in a strategy or in
    training is caught in the worker by :func:`execute_trial` and recorded as a failed trial at once,
    never retried. Interrupting the driver cancels the tasks still running; rerunning the same
    command resumes from the results store.

Options (``ExecutionContext.options``; strings are accepted, as a study file or the CLI gives them)
    ray_address          None or "": the Ray instance this process already holds, else the cluster
                         in ``$RAY_ADDRESS``, else a new local instance (``context.workers`` trials at
                         a time, or one per CPU). "auto": the cluster this machine belongs to.
                         "HOST:PORT" (the head's GCS port, 6379 by default) or "ray://HOST:10001".
    ray_cpus_per_trial   CPUs a trial declares (default: the preset's ``train.threads``, else 1); the
                         trial uses that many torch threads.
    ray_gpus_per_trial   GPUs a trial declares (default: 1 when the cluster has GPUs, else 0; 0.5
                         packs two trials on one GPU). A trial given a GPU trains on it ("cuda").
    ray_max_retries      runs of a trial after its worker died (default 2).
    ray_dataset          "object-store" (default) or "load", see above.
    ray_share_generators fit a shared generator once per group (default true), see above.
    ray_runtime_env      a Ray runtime environment (dict or JSON text) for the connection this
                         executor opens, e.g. ``{"env_vars": {"AUGFORGE_CACHE": "/scratch/augforge"}}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray

from augforge.bench.executors.base import ExecutionContext, Executor, OnResult, register_executor
from augforge.bench.trial import Trial, TrialEnv, TrialOutcome, execute_trial, failed_outcome
from augforge.config import DataConfig
from augforge.data.records import Dataset
from augforge.errors import UsageError
from augforge.fileio import atomic_write_bytes
from augforge.progress import bar as progress_bar
from augforge.strategy import Composite, Param

__all__ = ["RayExecutor", "RayOptions"]

#: Largest cache a group's first trial ships to the others (bytes); more stays on its node.
MAX_SHARED_CACHE_BYTES = 1 << 30
#: How often the driver refreshes the progress display while waiting for trials (seconds).
_POLL_S = 0.5


# -- options ------------------------------------------------------------------------------------
_OPTION_PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("ray_address", str, None, nullable=True),
        Param("ray_cpus_per_trial", float, None, low=0.01, nullable=True),
        Param("ray_gpus_per_trial", float, None, low=0.0, nullable=True),
        Param("ray_max_retries", int, 2, low=0, high=100),
        Param("ray_dataset", str, "object-store", choices=("object-store", "load")),
        Param("ray_share_generators", bool, True),
    )
}


@dataclass(frozen=True)
class RayOptions:
    """The Ray executor's settings, validated (see the module docstring for each)."""

    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_retries: int = 2
    dataset: str = "object-store"
    share_generators: bool = True
    runtime_env: dict[str, Any] | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RayOptions:
        """Read the ``ray_*`` keys of ``options`` (other keys belong to other executors).

        Raises UsageError naming the key for an unknown ``ray_*`` key or a value of the wrong type.
        """
        known = [*_OPTION_PARAMS, "ray_runtime_env"]
        values: dict[str, Any] = {}
        for key, value in options.items():
            if not key.startswith("ray_"):
                continue
            if key == "ray_runtime_env":
                values["runtime_env"] = _runtime_env(value)
            elif key in _OPTION_PARAMS:
                values[key.removeprefix("ray_")] = _OPTION_PARAMS[key].coerce(value, strategy="executor")
            else:
                raise UsageError(f"executor option {key!r} is unknown; Ray's options are {', '.join(known)}")
        if values.get("address") is not None:
            values["address"] = values["address"].strip() or None
        return cls(**values)


def _runtime_env(value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"executor.ray_runtime_env: not JSON ({exc.msg}); give an object such as "
                '\'{"env_vars": {"AUGFORGE_CACHE": "/scratch/augforge"}}\''
            ) from None
    if not isinstance(value, dict):
        raise UsageError(f"executor.ray_runtime_env: expected a table/object, got {type(value).__name__}")
    return dict(value)


# -- what a worker runs -------------------------------------------------------------------------
@dataclass(frozen=True)
class _DataRecipe:
    """How a worker loads the study's dataset itself (``ray_dataset="load"``)."""

    cfg: DataConfig
    allow_pickle: bool
    fingerprint: str


@dataclass
class _TaskResult:
    outcome: TrialOutcome
    shared_cache: dict[str, bytes] = field(default_factory=dict)  # path in the cache -> content
    notes: list[str] = field(default_factory=list)  # lines for the driver's log


_loaded: dict[str, Dataset] = {}  # per worker process: fingerprint -> dataset loaded from its recipe


def _silent(_: str) -> None:
    """Workers print nothing; their log lines travel back in the outcome."""


def _worker_dataset(data: Dataset | _DataRecipe) -> Dataset:
    """The study's dataset in this worker: as received, or loaded once per process from the recipe."""
    if isinstance(data, Dataset):
        return data
    if data.fingerprint not in _loaded:
        from augforge.data.sources import load_dataset

        ds = load_dataset(data.cfg, allow_pickle=data.allow_pickle, progress=False)
        if ds.fingerprint != data.fingerprint:
            raise RuntimeError(
                f"this worker loaded dataset {ds.fingerprint}, the study uses {data.fingerprint}; "
                "clear the data cache (AUGFORGE_CACHE) on this node, or use "
                "ray_dataset=object-store"
            )
        _loaded[data.fingerprint] = ds
    return _loaded[data.fingerprint]


def _node_cache_dir(wanted: Path) -> tuple[Path, str]:
    """The driver's generator cache folder when this node can create it (same machine, same image,
    shared disk), else this node's own ``$AUGFORGE_CACHE/generators``; and a note when it fell back."""
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted, ""
    except OSError as exc:
        from augforge.data.processing.cache import cache_root

        own = cache_root() / "generators"
        own.mkdir(parents=True, exist_ok=True)
        return own, (
            f"ray: node {ray.util.get_node_ip_address()} cannot use the generator cache {wanted} "
            f"({exc.strerror}); it uses {own}"
        )


def _visible(path: Path) -> bool:
    """Cache entries other than locks and half-written temporaries (hidden names by convention)."""
    return not path.name.startswith(".")


def _read_tree(root: Path, entries: Sequence[Path]) -> dict[str, bytes]:
    """Every visible file under ``entries`` (folders or files inside ``root``) by path relative to root."""
    out: dict[str, bytes] = {}
    for entry in entries:
        files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
        for path in files:
            rel = path.relative_to(root)
            if all(_visible(Path(part)) for part in rel.parts):
                out[rel.as_posix()] = path.read_bytes()
    return out


def _write_missing(root: Path, files: dict[str, bytes]) -> None:
    """Write each file of ``files`` under ``root`` unless it is there already; each one appears whole
    (temporary file, then rename), so a strategy reading the cache never sees half a file."""
    for rel, data in files.items():
        path = root / rel
        if path.exists():
            continue
        atomic_write_bytes(path, data)


@contextlib.contextmanager
def _private_cache(node_cache: Path) -> Iterator[Path | None]:
    """A fresh folder that shows every entry of ``node_cache`` through symbolic links: the trial
    reuses what the node has, and everything it creates lands in the private folder, apart from
    trials running beside it. Yields None where links cannot be made (the trial then uses the node
    cache and shares nothing)."""
    private = Path(tempfile.mkdtemp(prefix=".ray-", dir=node_cache))
    try:
        try:
            for entry in node_cache.iterdir():
                if _visible(entry):
                    os.symlink(entry, private / entry.name)
        except OSError:
            yield None
        else:
            yield private
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _run_trial_task(
    trial: Trial,
    env: TrialEnv,
    data: Dataset | _DataRecipe,
    shared_cache: dict[str, bytes] | None,
    collect_cache: bool,
    tracker: Any = None,
) -> _TaskResult:
    """One trial in a Ray worker. ``shared_cache``: files a group's first trial left in its cache, to
    write into this node's cache first. ``collect_cache``: send back what this trial adds to its cache."""
    import torch

    if tracker is not None:
        tracker.add.remote(trial.key)  # fire and forget: only feeds the "running" count
    ctx = ray.get_runtime_context()
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    if trial.preset.train.threads <= 0:  # the trial's own setting wins; else as many threads as CPUs declared
        torch.set_num_threads(max(1, int(ctx.get_assigned_resources().get("CPU", 1))))
    node_cache, note = _node_cache_dir(Path(env.cache_dir))
    notes = [note] if note else []
    if shared_cache:
        _write_missing(node_cache, shared_cache)
    t0 = time.perf_counter()
    try:
        dataset = _worker_dataset(data)
    except Exception as exc:  # noqa: BLE001 -- any load failure fails this trial, with its reason
        outcome = failed_outcome(
            trial,
            None,
            f"worker could not load the dataset: {type(exc).__name__}: {exc}",
            "",
            started="",
            seconds=time.perf_counter() - t0,
            device=device,
        )
        return _TaskResult(outcome, notes=notes)

    result = _TaskResult(outcome=None, notes=notes)  # type: ignore[arg-type]
    with _private_cache(node_cache) if collect_cache else contextlib.nullcontext(None) as private:
        trial_env = replace(env, device=device, cache_dir=private or node_cache, progress=False, log=_silent)
        result.outcome = execute_trial(trial, dataset, trial_env)
        if private is not None:
            created = [p for p in private.iterdir() if _visible(p) and not p.is_symlink()]
            files = _read_tree(private, created)
            _write_missing(node_cache, files)  # this node's later trials find it too
            size = sum(len(b) for b in files.values())
            if size <= MAX_SHARED_CACHE_BYTES:
                result.shared_cache = files
            else:
                result.notes.append(
                    f"ray: trial {trial.key} cached {size / 2**20:.0f} MiB, more than is "
                    "shared between nodes; other nodes fit their own"
                )
    result.outcome.record["executor"] = {
        "name": "ray",
        "node": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
        "task": ctx.get_task_id(),
    }
    return result


_remote_trial = ray.remote(_run_trial_task)


def _started_tracker() -> Any:
    """A tiny actor the tasks tell when they start, so the driver can show how many are running.
    Defined here (not at module level) so that Ray ships the class itself and the actor's process
    does not import augforge and torch."""

    @ray.remote(num_cpus=0)
    class StartedTrials:
        def __init__(self) -> None:
            self.keys: set[str] = set()

        def add(self, key: str) -> None:
            self.keys.add(key)

        def started(self) -> set[str]:
            return self.keys

    return StartedTrials.remote()


# -- the driver ---------------------------------------------------------------------------------
@dataclass
class _Planned:
    trial: Trial
    group: str | None  # trials of one group share what the group's first trial fits
    needs_gpu: bool


def _share_group(trial: Trial, registry: Any) -> tuple[str | None, bool]:
    """(group of trials whose offline step is identical, whether the strategy wants a GPU).

    The group is None for a strategy without an offline step. Same offline parts with the same
    parameters, settings and training slices: the same fit (unless the strategy seeds its fit with
    the trial seed). Below train fraction 1 the training subset depends on the seed, hence the seed.
    """
    try:
        strategy = registry.create(trial.strategy, trial.strategy_params)
    except Exception:  # noqa: BLE001 -- planned with this registry; only a plugin changed under us
        return None, False
    parts = strategy.parts if isinstance(strategy, Composite) else [strategy]
    offline = [(p.name, p.config) for p in parts if p.has_prepare]
    if not offline:
        return None, bool(strategy.needs_gpu)
    ident = {
        "offline": offline,
        "settings": trial.preset.to_dict(),
        "fraction": trial.train_fraction,
        "data": trial.dataset_fingerprint,
    }
    if trial.train_fraction < 1.0:
        ident["seed"] = trial.seed
    blob = json.dumps(ident, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16], bool(strategy.needs_gpu)


def _check_reachable(address: str) -> None:
    """Fail in seconds on a wrong ``HOST:PORT`` (``ray.init`` would keep retrying for minutes)."""
    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return  # "auto", "ray://..." (Ray Client has its own timeout) or a form Ray will judge
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise UsageError(
            f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); give the "
            "address `ray start --head` printed on the head node (HOST:6379 by default)"
        ) from None


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


class _Display:
    """Trials done, running, failed and queued: a rich bar on stderr, or nothing."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.failed, self.running = total, 0, 0, 0
        self._stack = contextlib.ExitStack()
        self._bar = self._stack.enter_context(progress_bar("", total, enabled=enabled, prefix="ray trials", eta=False))
        self.refresh()

    def finished(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1

    def refresh(self) -> None:
        queued = self.total - self.done - self.failed - self.running
        self._bar.update(
            completed=self.done + self.failed,
            description=f"{self.done} done, {self.running} running, {self.failed} failed, {queued} queued",
        )

    def close(self) -> None:
        self.refresh()
        self._stack.close()


@register_executor
class RayExecutor(Executor):
    """Each trial a Ray task; outcomes reported here as they finish (see the module docstring)."""

    name = "ray"

    def __init__(self, context: ExecutionContext):
        super().__init__(context)
        self.options = RayOptions.from_options(context.options)  # bad options fail before any work

    # -- connection ------------------------------------------------------------------------------
    def _connect(self, trials: Sequence[Trial]) -> bool:
        """Attach to or start Ray; True when this executor opened the connection (and closes it)."""
        opts, log = self.options, self.context.env.log
        if ray.is_initialized():
            if opts.runtime_env is not None:
                raise UsageError(
                    "executor.ray_runtime_env: this process is already connected to Ray; "
                    "give the runtime environment to its ray.init instead"
                )
            log("ray: using this process's Ray connection")
            return False
        address = opts.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            _check_reachable(address)
        kwargs: dict[str, Any] = {
            "address": address,
            "runtime_env": opts.runtime_env,
            "logging_level": logging.WARNING,
            "namespace": "augforge",
        }
        if address is None:  # a new local instance: size it, and skip the dashboard's extra processes
            kwargs["include_dashboard"] = False
            if self.context.workers:
                kwargs["num_cpus"] = math.ceil(self.context.workers * self._cpus_per_trial(trials[0]))
        try:
            ray.init(**kwargs)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            if address:
                raise UsageError(
                    f"--ray-address {address}: could not connect: {_first_line(str(exc))}; "
                    "give the address `ray start --head` printed on the head node"
                ) from None
            raise UsageError(f"--executor ray: could not start a local Ray instance: {_first_line(str(exc))}") from None
        res = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        log(
            f"ray: {'connected to ' + address if address else 'started a local instance'}: {nodes} node(s), "
            f"{res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"
        )
        return True

    def _note_threads(self, trials: Sequence[Trial], gpus: float) -> None:
        """The thread count is part of what a CPU trial computes: say so when trials with
        ``train.threads`` 0 get another count here than the local executor would give them."""
        import torch

        if gpus:
            return
        local = torch.get_num_threads()
        counts = {int(self._cpus_per_trial(t)) for t in trials if t.preset.train.threads <= 0}
        if counts and counts != {local}:
            self.context.env.log(
                f"ray: trials with train.threads 0 train with {'/'.join(map(str, sorted(counts)))} thread(s) each "
                f"(the CPUs they declare), where the local executor uses {local}: their numbers differ slightly "
                "from a local run's; set train.threads to compare across executors"
            )

    def _cpus_per_trial(self, trial: Trial) -> float:
        if self.options.cpus_per_trial is not None:
            return self.options.cpus_per_trial
        return float(max(1, trial.preset.train.threads))

    def _gpus_per_trial(self) -> float:
        if self.options.gpus_per_trial is not None:
            return self.options.gpus_per_trial
        # Every trial on the same kind of device, so that a study's numbers are comparable.
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def _warn_if_no_node_fits(self, cpus: float, gpus: float) -> None:
        """Ray holds a task that no node can take until one can (an autoscaler may add it): say so."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
            self.context.env.log(
                f"ray: no node has {cpus:g} CPUs and {gpus:g} GPUs for one trial; the trials "
                "wait until such a node joins (see ray_cpus_per_trial, ray_gpus_per_trial)"
            )

    # -- the study -------------------------------------------------------------------------------
    def run(self, trials: Sequence[Trial], on_result: OnResult) -> None:
        if not trials:
            return
        opened = self._connect(trials)
        try:
            self._run(trials, on_result)
        finally:
            if opened:
                ray.shutdown()

    def _run(self, trials: Sequence[Trial], on_result: OnResult) -> None:
        from augforge.plugins import get_registry

        ctx, opts, log = self.context, self.options, self.context.env.log
        registry = get_registry()
        gpus = self._gpus_per_trial()
        self._warn_if_no_node_fits(max(self._cpus_per_trial(t) for t in trials), gpus)
        planned = []
        for t in trials:
            group, needs_gpu = _share_group(t, registry)
            planned.append(_Planned(t, group if opts.share_generators else None, needs_gpu))
        for label in sorted({p.trial.name for p in planned if p.needs_gpu and not gpus}):
            log(f"ray: strategy {label!r} needs a GPU to be practical and its trials get none; they run on CPU")
        self._note_threads(trials, gpus)

        if opts.dataset == "object-store":
            data: Any = ray.put(ctx.dataset)  # once; every task gets a reference, each node one copy
        else:
            data = _DataRecipe(ctx.data_cfg, ctx.allow_pickle, ctx.dataset.fingerprint)
        env = replace(ctx.env, log=_silent)  # the driver's log function may hold a console: keep it here
        display = _Display(len(trials), ctx.env.progress)
        tracker = _started_tracker() if ctx.env.progress else None

        pending: dict[Any, _Planned] = {}
        leaders: set[int] = set()
        waiting: dict[str, list[_Planned]] = {}  # group -> trials held until its first trial is done

        def submit(p: _Planned, shared: Any = None, leader: bool = False) -> None:
            task = _remote_trial.options(
                num_cpus=self._cpus_per_trial(p.trial),
                num_gpus=gpus,
                max_retries=opts.max_retries,
                retry_exceptions=False,
                name=f"augforge-trial-{p.trial.key}",
            )
            ref = task.remote(p.trial, env, data, shared, leader, tracker)
            pending[ref] = p
            if leader:
                leaders.add(id(p))

        for p in planned:
            if p.group is None:
                submit(p)
            elif p.group in waiting:
                waiting[p.group].append(p)
            else:
                waiting[p.group] = []
                submit(p, leader=True)

        try:
            while pending:
                # A bounded wait keeps the display fresh and Ctrl-C prompt.
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
                for ref in ready:
                    p = pending.pop(ref)
                    result = self._collect(ref, p)
                    if id(p) in leaders:
                        followers = waiting.pop(p.group, [])  # type: ignore[arg-type]
                        shared = ray.put(result.shared_cache) if result.shared_cache and followers else None
                        for f in followers:
                            submit(f, shared)
                    for note in result.notes:
                        log(note)
                    for line in result.outcome.log_lines:
                        log(_first_line(line))
                    display.finished(result.outcome.ok)
                    on_result(result.outcome)
                if tracker is not None:
                    with contextlib.suppress(ray.exceptions.RayError):
                        started = ray.get(tracker.started.remote(), timeout=10)
                        display.running = sum(1 for q in pending.values() if q.trial.key in started)
                display.refresh()
        except BaseException:
            # Interrupted (Ctrl-C) or the store failed: stop the cluster's work for this study; the
            # store holds every outcome reported so far, so the same command resumes. Without force,
            # a running trial is interrupted in Python and its worker process lives on for the next.
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise
        finally:
            display.close()
            if tracker is not None:
                with contextlib.suppress(Exception):
                    ray.kill(tracker)

    def _collect(self, ref: Any, p: _Planned) -> _TaskResult:
        """The task's result, or a failed outcome when Ray could not run it to the end."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # raised in the task, outside the trial itself
            error = f"Ray task failed: {_first_line(str(exc.cause or exc))}"
            details = str(exc)
        except ray.exceptions.RayError as exc:  # the worker or its node died, out of retries
            runs = self.options.max_retries + 1
            error = f"Ray worker died ({type(exc).__name__}) in each of {runs} run(s): {_first_line(str(exc))}"
            details = str(exc)
        outcome = failed_outcome(
            p.trial, self.context.dataset, error, details, started="", seconds=0.0, device=self.context.env.device
        )
        return _TaskResult(outcome)
