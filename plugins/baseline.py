"""The baseline: no augmentation at all. Every study ranks the other strategies against it."""

from __future__ import annotations

from augforge import BASELINE, Strategy, hookimpl


class NoAugmentation(Strategy):
    name = BASELINE
    description = "No augmentation: the baseline every other strategy is compared with."


@hookimpl
def register_strategies(register):
    register(NoAugmentation)
