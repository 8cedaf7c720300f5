"""The executors that need nothing beyond augforge: ``local`` and ``process``.

``local``    in this process, one trial after another (the default; progress bars shown).
``process``  a pool of local worker processes; each loads the dataset itself (from the data cache)
             and checks its fingerprint, so no arrays are shipped between processes.

Threads and results. torch's CPU kernels split their sums across threads, so a trial trained with
one thread ends with other weights (and a slightly different Dice) than the same trial with two.
A trial therefore trains with the thread count its own settings give (``train.threads``, or
torch's default when 0), whichever executor runs it and however many workers run beside it: the
worker count decides how many trials run at once, never what a trial computes. To run more trials
at once on the same cores, lower ``train.threads`` (a different, recorded setting), not the
threads of a worker.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from augforge.bench.executors.base import Executor, OnResult, register_executor
from augforge.bench.trial import Trial, TrialEnv, TrialOutcome, execute_trial, failed_outcome
from augforge.clock import utc_stamp
from augforge.config import DataConfig
from augforge.data.records import Dataset

__all__ = ["LocalExecutor", "ProcessExecutor", "run_in_worker"]


@register_executor
class LocalExecutor(Executor):
    """Trials one after another in this process."""

    name = "local"

    def run(self, trials: Sequence[Trial], on_result: OnResult) -> None:
        for trial in trials:
            on_result(execute_trial(trial, self.context.dataset, self.context.env))


# -- process pool ------------------------------------------------------------------------------
_worker_dataset: Dataset | None = None
_worker_error: str | None = None


#: How often a worker checks that the study process that started it is still there.
PARENT_POLL_S = 0.5


def _exit_with_parent(parent: int) -> None:
    """End this worker soon after the study process dies (killed, or out of memory): a worker left
    behind would go on training a trial nobody collects, on cores the user thinks are free."""
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:  # re-parented: the study process is gone
            os._exit(1)


def _init_worker(data_cfg: DataConfig, allow_pickle: bool, fingerprint: str, threads: int) -> None:
    """Load the study's dataset once per worker. ``threads``: torch's default thread count in the
    parent, which a trial with ``train.threads`` 0 trains with (as it would in the parent)."""
    global _worker_dataset, _worker_error
    import torch

    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="augforge-parent").start()

    torch.set_num_threads(max(1, threads))
    try:
        from augforge.data.sources import load_dataset

        ds = load_dataset(data_cfg, allow_pickle=allow_pickle, progress=False)
    except Exception as exc:  # noqa: BLE001 -- any load failure is reported with each trial of this worker
        _worker_error = f"worker could not load the dataset: {type(exc).__name__}: {exc}"
        return
    if ds.fingerprint != fingerprint:
        _worker_error = (
            f"worker loaded dataset {ds.fingerprint}, the study uses {fingerprint}; "
            "clear the data cache (AUGFORGE_CACHE) and rerun"
        )
        return
    _worker_dataset = ds


def run_in_worker(trial: Trial, env: TrialEnv, dataset: Dataset | None = None) -> TrialOutcome:
    """Run one trial in a worker process on the dataset the worker loaded (or ``dataset``)."""
    ds = dataset if dataset is not None else _worker_dataset
    if ds is None:
        return failed_outcome(
            trial,
            None,
            _worker_error or "worker has no dataset",
            "",
            started=utc_stamp(),
            seconds=0.0,
            device=env.device,
        )
    return execute_trial(trial, ds, env)


def _quiet(_: str) -> None:
    """Workers do not print; their log lines travel back in the outcome."""


@register_executor
class ProcessExecutor(Executor):
    """Trials in parallel in local worker processes (spawned, so no torch state is forked)."""

    name = "process"

    def run(self, trials: Sequence[Trial], on_result: OnResult) -> None:
        if not trials:
            return
        import torch

        cpus = os.cpu_count() or 1
        default_threads = torch.get_num_threads()
        per_trial = max(t.preset.train.threads or default_threads for t in trials)
        workers = min(self.context.workers or max(1, cpus // per_trial), len(trials))
        if workers * per_trial > cpus:
            self.context.env.log(
                f"note: {workers} workers x {per_trial} threads per trial on {cpus} CPU cores: trials wait for "
                f"each other's threads (same results, more time); --set train.threads=N changes each trial's "
                f"thread count, and with it the results"
            )
        env = replace(self.context.env, progress=False, log=_quiet)
        mp = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp,
            initializer=_init_worker,
            initargs=(
                self.context.data_cfg,
                self.context.allow_pickle,
                self.context.dataset.fingerprint,
                default_threads,
            ),
        ) as pool:
            futures = {pool.submit(run_in_worker, t, env): t for t in trials}
            for fut in cf.as_completed(futures):
                trial = futures[fut]
                try:
                    outcome = fut.result()
                except Exception as exc:  # noqa: BLE001 -- a dead worker (killed, out of memory) fails its trial only
                    outcome = failed_outcome(
                        trial,
                        self.context.dataset,
                        f"worker process failed: {exc!r}",
                        "",
                        started="",
                        seconds=0.0,
                        device=env.device,
                    )
                for line in outcome.log_lines:
                    self.context.env.log(line.splitlines()[0])
                on_result(outcome)
