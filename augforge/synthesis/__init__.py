"""Synthetic tumours: tumour patches from a training split, placement inside a healthy slice's lung
parenchyma, paste-in with a soft edge, and a quality summary of generated patches.

Generic over where a tumour comes from (a generator's sample or a real tumour cut from another
slice): every function takes a tumour HU patch and its mask.

A strategy that generates tumours offers ``generate(train, ctx, n) -> GeneratedSet`` besides
``prepare``; ``augforge generate`` calls it and writes what it returns. :class:`GeneratorStrategy`
(a generator fitted on the training tumours) and :class:`PasteInStrategy` (any other source of
tumours) do all of that for a strategy that says where its tumours come from (:mod:`.pastein`).
"""

from augforge.synthesis.generated import GeneratedSet
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
from augforge.synthesis.pastein import (
    MATCH_NOISE,
    PAPER_SLICE_PX,
    PASTE_PARAMS,
    Fitted,
    GeneratorStrategy,
    PasteInStrategy,
    Tumour,
    fit_lock,
    gen_seed_param,
    ratio_param,
    sizes_param,
)
from augforge.synthesis.placement import VESSEL_HU, allowed_region, pick_position, valid_positions
from augforge.synthesis.roi import PARENCHYMA_HU, HUScale, TumourROIs, extract_rois

# The quality summary needs torch: imported on first use, so placement and paste stay light.
_QUALITY = ("QualitySummary", "frechet_distance", "quality_summary", "shape_statistics")


def __getattr__(name: str):
    if name in _QUALITY:
        from augforge.synthesis import quality

        return getattr(quality, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MATCH_NOISE",
    "gen_seed_param",
    "sizes_param",
    "CANVAS_TRIES",
    "HU_SCALE",
    "PAPER_SLICE_PX",
    "PARENCHYMA_HU",
    "PASTE_PARAMS",
    "VESSEL_HU",
    "Fitted",
    "GeneratedSet",
    "GeneratorStrategy",
    "HUScale",
    "NoduleMeasurements",
    "PasteInStrategy",
    "PasteScale",
    "QualitySummary",
    "Tumour",
    "TumourROIs",
    "allowed_region",
    "blend_tumour",
    "canvas_lung",
    "canvas_site",
    "clean_mask",
    "estimate_noise_hu",
    "extract_rois",
    "fit_lock",
    "frechet_distance",
    "measure_nodule",
    "otsu_threshold",
    "paste_canvases",
    "paste_into_canvases",
    "paste_scale",
    "paste_tumour",
    "pick_position",
    "quality_summary",
    "ratio_param",
    "resize_patch",
    "shape_statistics",
    "valid_positions",
]
