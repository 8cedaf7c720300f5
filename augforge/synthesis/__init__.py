"""Synthetic tumours: tumour patches from a training split, placement inside a healthy slice's lung
parenchyma, paste-in with a soft edge, and a quality summary of generated patches.

Generic over where a tumour comes from (a generator's sample or a real tumour cut from another
slice): every function takes a tumour HU patch and its mask.

A strategy that generates tumours offers ``generate(train, ctx, n) -> GeneratedSet`` besides
``prepare``; ``augforge generate`` calls it and writes what it returns.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from augforge.data.records import Slice
from augforge.synthesis.intensity import HU_SCALE, PasteScale, canvas_site, otsu_threshold, paste_canvases, paste_scale
from augforge.synthesis.paste import (
    CANVAS_TRIES,
    NoduleMeasurements,
    blend_tumour,
    canvas_lung,
    clean_mask,
    estimate_noise_hu,
    measure_nodule,
    paste_into_canvases,
    paste_tumour,
    resize_patch,
)
from augforge.synthesis.placement import VESSEL_HU, allowed_region, pick_position, valid_positions
from augforge.synthesis.roi import PARENCHYMA_HU, HUScale, TumourROIs, extract_rois


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


# The quality summary needs torch: imported on first use, so placement and paste stay light.
_QUALITY = ("QualitySummary", "frechet_distance", "quality_summary", "shape_statistics")


def __getattr__(name: str):
    if name in _QUALITY:
        from augforge.synthesis import quality

        return getattr(quality, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CANVAS_TRIES",
    "HU_SCALE",
    "PARENCHYMA_HU",
    "VESSEL_HU",
    "GeneratedSet",
    "HUScale",
    "NoduleMeasurements",
    "PasteScale",
    "QualitySummary",
    "TumourROIs",
    "allowed_region",
    "blend_tumour",
    "canvas_lung",
    "canvas_site",
    "clean_mask",
    "estimate_noise_hu",
    "extract_rois",
    "frechet_distance",
    "measure_nodule",
    "otsu_threshold",
    "paste_canvases",
    "paste_into_canvases",
    "paste_scale",
    "paste_tumour",
    "pick_position",
    "quality_summary",
    "resize_patch",
    "shape_statistics",
    "valid_positions",
]
