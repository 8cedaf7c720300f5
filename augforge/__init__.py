"""augforge: augmentation strategies for lung-cancer CT segmentation, and a harness that ranks them.

Public API for plugin authors::

    from augforge import hookimpl, Strategy, Param

    class Mirror(Strategy):
        name = "mirror"
        description = "Left-right flip with probability p."
        params = (Param("p", float, 0.5, "flip probability", low=0.0, high=1.0),)

    @hookimpl
    def register_strategies(register):
        register(Mirror)
"""

from __future__ import annotations

__version__ = "0.1.0"

from augforge.errors import AugforgeError, DataError, UnknownStrategyError, UsageError
from augforge.hookspecs import hookimpl, hookspec
from augforge.strategy import (
    Param,
    PrepareContext,
    Strategy,
    Transform,
)

__all__ = [
    "AugforgeError",
    "DataError",
    "Param",
    "PrepareContext",
    "Strategy",
    "Transform",
    "UnknownStrategyError",
    "UsageError",
    "__version__",
    "hookimpl",
    "hookspec",
]
