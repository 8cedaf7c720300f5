"""What every executor is: the interface, its context, and the registry of executor classes.

An executor receives planned trials and calls ``on_result(outcome)`` in the calling process, once per
trial, as each finishes (in any order); only the caller writes the results store. A trial that
raises comes back as a failed outcome; it never stops the others.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from augforge.bench.trial import Trial, TrialEnv, TrialOutcome
from augforge.config import DataConfig
from augforge.data.records import Dataset

__all__ = ["EXECUTORS", "ExecutionContext", "Executor", "OnResult", "register_executor"]

OnResult = Callable[[TrialOutcome], None]


@dataclass
class ExecutionContext:
    """What an executor needs besides the trials.

    dataset:      the dataset, loaded in this process (the local executor uses it directly).
    data_cfg:     how another process loads the same dataset (``load_dataset(data_cfg, ...)``).
    allow_pickle: passed on to ``load_dataset`` in workers (the user's explicit flag).
    env:          device, generator cache, progress, log.
    workers:      trials at once (0 = as many as the CPU cores hold at each trial's thread count, at least one).
    options:      executor-specific settings (``ray_address`` for the Ray executor).
    """

    dataset: Dataset
    data_cfg: DataConfig
    allow_pickle: bool
    env: TrialEnv
    workers: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # executor-specific, e.g. {"ray_address": ...}


class Executor(abc.ABC):
    """Runs trials and reports each outcome through ``on_result`` in the calling process."""

    name: ClassVar[str] = ""

    def __init__(self, context: ExecutionContext):
        self.context = context

    @abc.abstractmethod
    def run(self, trials: Sequence[Trial], on_result: OnResult) -> None:
        """Run every trial; call ``on_result`` once per trial as soon as it is done."""


EXECUTORS: dict[str, type[Executor]] = {}


def register_executor(cls: type[Executor]) -> type[Executor]:
    """Class decorator: make an executor available under ``cls.name`` (``--executor NAME``)."""
    if not cls.name:
        raise ValueError(f"executor {cls.__qualname__} has no name")
    EXECUTORS[cls.name] = cls
    return cls
