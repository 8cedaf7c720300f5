"""The network input of a slice, from its image alone: choose the HU the network sees
(:func:`input_hu`), normalise them to [0, 1], then CLAHE, as in the seed paper.

What the network sees (``data.input``) is computed from the image and nothing else -- never from the
tumour mask (see docs/data.md, "What reaches the network"):

- ``whole``: the whole slice;
- ``lung``: the lung field (:func:`augforge.data.processing.lungfield.lung_field`, thresholded from the image)
  grown by ``data.field_margin_mm``, ``NON_LUNG_HU`` elsewhere: the paper's ``hu_array``. A tumour
  that the thresholded field misses is cut away with the rest, as in the paper's pipeline.

Normalisation is per-slice min-max (the paper) or a fixed HU window ``"LEVEL,WIDTH"`` (or a named
window: ``lung`` = -600,1500, ``mediastinum`` = 40,400). A window keeps intensities comparable
across slices, which min-max does not (one bright vessel rescales the whole slice).

CLAHE is ``skimage.exposure.equalize_adapthist`` with its defaults (tiles of 1/8 of the image,
clip limit 0.01, 256 bins): the function and parameters the paper used, so that paper-preset
results are comparable. It is deterministic, and takes about 7 ms on a 256x256 slice.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.exposure import equalize_adapthist

from augforge.config import parse_window
from augforge.data.processing.lungfield import lung_field
from augforge.data.records import NON_LUNG_HU, Slice

CLAHE_CLIP_LIMIT = 0.01


def normalise(hu: np.ndarray, window: str = "") -> np.ndarray:
    """(H, W) HU -> (H, W) float32 in [0, 1]: per-slice min-max, or the HU window. A constant slice
    maps to zeros."""
    x = np.asarray(hu, dtype=np.float32)
    win = parse_window(window)
    if win is None:
        lo, hi = float(x.min()), float(x.max())
    else:
        lo, hi = win[0] - win[1] / 2, win[0] + win[1] / 2
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) * np.float32(1.0 / (hi - lo)), 0.0, 1.0)


def grow_field(field: np.ndarray, margin_px: float) -> np.ndarray:
    """``field`` (H, W) bool grown by ``margin_px`` pixels (Euclidean distance); itself for 0."""
    if margin_px <= 0 or not field.any():
        return field
    outside = (~field).astype(np.uint8)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
    return dist <= margin_px


def input_hu(
    hu: np.ndarray,
    lung_hu: np.ndarray,
    field: np.ndarray,
    mode: str = "lung",
    margin_mm: float = 0.0,
    spacing_mm: float = 1.0,
) -> np.ndarray:
    """(H, W) float32 HU the network sees of one slice (see the module docstring).

    hu: the whole slice; lung_hu: the slice's lung-only HU (the source's, e.g. the paper's
    ``hu_array``); field: the lung field, computed from the image. None of them may depend on the
    tumour mask: the data sources guarantee it and tests/test_validity.py checks it.
    """
    if mode == "whole":
        return np.asarray(hu, np.float32)
    if margin_mm <= 0:
        return np.asarray(lung_hu, np.float32)
    grown = grow_field(np.asarray(field, bool), margin_mm / spacing_mm)
    return np.where(grown, hu, np.float32(NON_LUNG_HU)).astype(np.float32, copy=False)


def network_input(
    s: Slice, window: str = "", clahe: bool = True, mode: str = "lung", margin_mm: float = 0.0
) -> np.ndarray:
    """The (H, W) float32 [0, 1] network input of a :class:`~augforge.data.records.Slice`: what the
    data layer stores as ``Slice.image``, and what a strategy's new slices get."""
    field = s.lung_field if s.lung_field is not None else lung_field(s.hu)
    x = input_hu(s.hu, s.lung_hu, field, mode, margin_mm, float(s.spacing_mm))
    return preprocess(x, window=window, clahe=clahe)


def preprocess(lung_hu: np.ndarray, window: str = "", clahe: bool = True) -> np.ndarray:
    """(H, W) HU the network sees (:func:`input_hu`) -> (H, W) float32 in [0, 1]."""
    x = normalise(lung_hu, window)
    if clahe and x.max() > x.min():
        x = equalize_adapthist(x, clip_limit=CLAHE_CLIP_LIMIT)
    return np.ascontiguousarray(x, dtype=np.float32)
