"""Executors: where the trials of a study run. One small interface (:mod:`.base`), found by name.

``local``    in this process, one trial after another (the default; progress bars shown).
``process``  a pool of local worker processes (:mod:`.local`).
``ray``      a Ray cluster (:mod:`.ray_cluster`; the optional extra ``augforge[ray]``; docs/distributed.md).

Each executor's module is imported when it is first asked for (Ray takes a second to import and may
not be installed). A third-party executor registers itself with :func:`register_executor` when its
module is imported.
"""

from __future__ import annotations

import importlib

from augforge.bench.executors.base import EXECUTORS, ExecutionContext, Executor, OnResult, register_executor
from augforge.errors import UsageError

__all__ = [
    "EXECUTORS",
    "ExecutionContext",
    "Executor",
    "OnResult",
    "executor_class",
    "executor_names",
    "make_executor",
    "register_executor",
]

#: name -> (the module that defines it, a package it needs and how to install that, or None)
_BUILT_IN: dict[str, tuple[str, tuple[str, str] | None]] = {
    "local": ("augforge.bench.executors.local", None),
    "process": ("augforge.bench.executors.local", None),
    "ray": ("augforge.bench.executors.ray_cluster", ("ray", "pip install 'augforge[ray]'")),
}


def executor_names() -> list[str]:
    """Every executor that ``--executor`` accepts."""
    return sorted({*_BUILT_IN, *EXECUTORS})


def executor_class(name: str) -> type[Executor]:
    """The executor registered as ``name``; a UsageError naming the choices, or what to install."""
    if name not in EXECUTORS and name in _BUILT_IN:
        module, needs = _BUILT_IN[name]
        if needs is not None:
            package, install = needs
            try:
                importlib.import_module(package)
            except ImportError:
                raise UsageError(f"--executor {name} needs {package}: {install}") from None
        importlib.import_module(module)
    try:
        return EXECUTORS[name]
    except KeyError:
        raise UsageError(f"--executor {name!r}: choose one of {', '.join(executor_names())}") from None


def make_executor(name: str, context: ExecutionContext) -> Executor:
    return executor_class(name)(context)
