"""Network input from lung-only HU: normalise to [0, 1], then CLAHE, as in the seed paper.

Normalisation is per-slice min-max (the paper) or a fixed HU window ``"LEVEL,WIDTH"`` (or a named
window: ``lung`` = -600,1500, ``mediastinum`` = 40,400). A window keeps intensities comparable
across slices, which min-max does not (one bright vessel rescales the whole slice).

CLAHE is ``skimage.exposure.equalize_adapthist`` with its defaults (tiles of 1/8 of the image,
clip limit 0.01, 256 bins): the function and parameters the paper used, so that paper-preset
results are comparable. It is deterministic, and takes about 7 ms on a 256x256 slice.
"""

from __future__ import annotations

import functools

import numpy as np
from skimage.exposure import equalize_adapthist

from augforge.errors import UsageError

NAMED_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
}
CLAHE_CLIP_LIMIT = 0.01


@functools.lru_cache(maxsize=32)
def parse_window(window: str) -> tuple[float, float] | None:
    """``""`` -> None (min-max); ``"lung"`` or ``"-600,1500"`` -> (level, width) in HU."""
    text = window.strip().lower()
    if not text:
        return None
    if text in NAMED_WINDOWS:
        return NAMED_WINDOWS[text]
    try:
        level, width = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"data.window {window!r}: expected LEVEL,WIDTH in HU (e.g. -600,1500) or "
                         f"one of {', '.join(NAMED_WINDOWS)}; empty for per-slice min-max") from None
    if not width > 0:
        raise UsageError(f"data.window {window!r}: the width must be positive")
    return level, width


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


def preprocess(lung_hu: np.ndarray, window: str = "", clahe: bool = True) -> np.ndarray:
    """The U-Net input of one slice: (H, W) lung-only HU -> (H, W) float32 in [0, 1]."""
    x = normalise(lung_hu, window)
    if clahe and x.max() > x.min():
        x = equalize_adapthist(x, clip_limit=CLAHE_CLIP_LIMIT)
    return np.ascontiguousarray(x, dtype=np.float32)
