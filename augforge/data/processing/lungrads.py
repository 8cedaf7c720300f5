"""Lung-RADS v2022 baseline category of a single nodule, from its size and texture.

Sizes are *mean diameters* in mm: the mean of the long axis and the short axis measured
perpendicular to it on the same slice, rounded to one decimal place, as Lung-RADS v2022 asks.

| nodule type               | LR2       | LR3                          | LR4A               | LR4B          |
|---------------------------|-----------|------------------------------|--------------------|---------------|
| solid                     | < 6       | 6 to < 8                     | 8 to < 15          | >= 15         |
| part-solid                | total < 6 | total >= 6, solid part < 6   | solid part 6 to <8 | solid part >=8|
| ground glass (non-solid)  | < 30      | >= 30                        | -                  | -             |

LIDC texture ratings map to these types: 1 (non-solid / ground glass) and 2 (non-solid/mixed) are
ground glass; 3 (part-solid/mixed) is part-solid; 4 (solid/mixed) and 5 (solid) are solid.
"""

from __future__ import annotations

import math

from augforge.errors import DataError

SOLID = "solid"
PART_SOLID = "part-solid"
GROUND_GLASS = "ground-glass"

#: Solid share of a part-solid nodule's diameter when the solid part was not measured.
DEFAULT_SOLID_FRACTION = 0.5

_TEXTURE_TYPE = {1: GROUND_GLASS, 2: GROUND_GLASS, 3: PART_SOLID, 4: SOLID, 5: SOLID}


def nodule_type(texture: int) -> str:
    """Lung-RADS nodule type of an LIDC texture rating (1 ground glass .. 5 solid)."""
    try:
        return _TEXTURE_TYPE[int(texture)]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"nodule texture {texture!r} is not an LIDC rating 1..5") from None


def _size(value: float, what: str, *, allow_zero: bool = False) -> float:
    bad = value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero)
    if bad:
        raise DataError(f"nodule {what} {value!r} mm is not a positive number")
    # Lung-RADS measures to one decimal place: 5.96 mm counts as 6.0 mm.
    return round(float(value), 1)


def classify(diameter_mm: float, texture: int, solid_diameter_mm: float | None = None) -> str:
    """Lung-RADS v2022 baseline class ("LR2", "LR3", "LR4A" or "LR4B") of one nodule.

    diameter_mm:       mean diameter of the whole nodule, mm.
    texture:           LIDC texture rating 1..5 (see the module docstring for the mapping).
    solid_diameter_mm: mean diameter of the solid component, mm; only used for part-solid nodules,
                       and taken as ``DEFAULT_SOLID_FRACTION * diameter_mm`` when not given.
    """
    kind = nodule_type(texture)
    d = _size(diameter_mm, "diameter")
    if kind == GROUND_GLASS:
        return "LR2" if d < 30.0 else "LR3"
    if kind == SOLID:
        if d < 6.0:
            return "LR2"
        if d < 8.0:
            return "LR3"
        return "LR4A" if d < 15.0 else "LR4B"
    solid = DEFAULT_SOLID_FRACTION * d if solid_diameter_mm is None else solid_diameter_mm
    solid = _size(min(solid, d), "solid diameter", allow_zero=True)
    if d < 6.0:
        return "LR2"
    if solid < 6.0:
        return "LR3"
    return "LR4A" if solid < 8.0 else "LR4B"
