"""The hook specifications. A plugin imports ``hookimpl`` from ``augforge`` and implements these."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from augforge.strategy import Strategy

__all__ = ["hookimpl", "hookspec", "register_strategies"]

hookspec = pluggy.HookspecMarker("augforge")
hookimpl = pluggy.HookimplMarker("augforge")


@hookspec
def register_strategies(register: Callable[[type[Strategy]], None]) -> None:
    """Register augmentation strategies by calling ``register(StrategyClass)`` once per strategy.

    ``StrategyClass`` is a subclass of :class:`augforge.Strategy` with a unique ``name``, a one-line
    ``description`` and its ``params``. The host checks the declaration, records which plugin
    registered it, and reports a duplicate name with both plugins named.
    """
