"""What a paste-in strategy's ``generate`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from augforge.data.records import Slice

__all__ = ["GeneratedSet"]


@dataclass
class GeneratedSet:
    """What a generative strategy's ``generate(train, ctx, n)`` returns.

    slices:      the synthetic slices (healthy canvases with a pasted tumour), ``image`` None.
    patches_hu, patches_mask: (n, S, S) HU and bool, the generated tumours before resizing.
    real_hu, real_mask:       (N, S, S) HU and {0, 1}, the training tumours they were learnt from.
    info:        JSON-able facts about the generator (key, fit time, cache hit, warnings, ...).
    """

    slices: list[Slice]
    patches_hu: np.ndarray
    patches_mask: np.ndarray
    real_hu: np.ndarray
    real_mask: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
