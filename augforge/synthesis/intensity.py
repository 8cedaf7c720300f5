"""Intensity anchors for paste-in, on Hounsfield units and on scales without units.

Pasting a tumour needs four facts about the image's intensity scale: the value of aerated lung (the
background of a tumour patch), the value from which a pixel is dense tissue (a vessel or the chest
wall, where no tumour may go; the solid part of a nodule), the range a generator maps to [-1, 1], and
where the lung is. On Hounsfield units these are physical constants (``PARENCHYMA_HU``, ``VESSEL_HU``,
``SOLID_HU``, the window -1100..500 HU) and the lung field comes from the slice
(:func:`augforge.synthesis.canvas_lung`).

Images without a physical scale (an 8-bit export, ``dataset.meta["intensity"] = "8-bit"``) carry none
of these. :func:`paste_scale` then reads them from the training slices alone (never the test split,
never a mask): one Otsu threshold over their pooled pixels splits dark (aerated lung) from bright
(soft tissue, vessels, nodules); the lung is the dark side, dense is the bright side, parenchyma is
the median of the dark pixels and the generator's range is the pixels' full range. A threshold
learnt from the data, not tuned to any one export: the same rule on any scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from augforge.data.display.preview import windowed
from augforge.data.records import Slice
from augforge.errors import DataError
from augforge.synthesis.paste import SOLID_HU, canvas_lung, estimate_noise_hu
from augforge.synthesis.placement import VESSEL_HU, allowed_region
from augforge.synthesis.roi import PARENCHYMA_HU, HUScale

__all__ = ["HU_SCALE", "PasteScale", "canvas_site", "otsu_threshold", "paste_canvases", "paste_scale"]

#: At most this many slices, evenly spread over the training split, are pooled to find the anchors.
_POOL_SLICES = 256


@dataclass(frozen=True)
class PasteScale:
    """Where lung, dense tissue and solid tumour lie on one dataset's intensity scale."""

    unit: str  # "HU", or the dataset's scale ("8-bit")
    lo: float  # the range a generator maps to [-1, 1]
    hi: float
    parenchyma: float  # aerated lung: the background of tumour patches
    dense: float  # at or above: vessel, wall, soft tissue (no tumour goes there)
    solid: float  # tumour pixels at or above: its solid part (texture, hence the Lung-RADS class)

    @property
    def generator(self) -> HUScale:
        """The linear map between this scale's [lo, hi] and a generator's [-1, 1]."""
        return HUScale(self.lo, self.hi)

    def lung(self, canvas: Slice) -> np.ndarray:
        """(H, W) bool, where a tumour may sit: the lung field on HU, the dark side elsewhere."""
        if self.unit == "HU":
            return canvas_lung(canvas)
        return np.asarray(canvas.hu, np.float32) < self.dense

    def display(self, values: np.ndarray) -> np.ndarray:
        """Intensities -> [0, 1] for pictures: the lung window on HU, the scale's range elsewhere."""
        if self.unit == "HU":
            return windowed(values)
        return np.clip((np.asarray(values, np.float32) - self.lo) / (self.hi - self.lo), 0.0, 1.0)


#: The anchors on Hounsfield units (the constants every paste-in strategy used before scales existed).
HU_SCALE = PasteScale("HU", -1100.0, 500.0, PARENCHYMA_HU, VESSEL_HU, SOLID_HU)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (any shape, any scale): the cut between ``bins`` levels from min to
    max that maximises the variance between the two classes; where several cuts tie (classes separated
    by an empty gap), the middle of them. Values above it are the bright class. Raises ValueError when
    all values are equal."""
    v = np.asarray(values, np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        raise ValueError("all values are equal: no threshold separates them")
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    p = counts / counts.sum()
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(p)[:-1]  # share of the dark class when cutting after bin k
    m0 = np.cumsum(p * centres)[:-1]
    w1 = 1.0 - w0
    mean = float((p * centres).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.where((w0 > 0) & (w1 > 0), (mean * w0 - m0) ** 2 / (w0 * w1), 0.0)
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    k = 0.5 * (best[0] + best[-1])
    return float(lo + (k + 1.0) * (hi - lo) / bins)


def paste_scale(intensity: str, slices: Sequence[Slice]) -> PasteScale:
    """The anchors of ``intensity``: :data:`HU_SCALE` on "HU", else learnt from ``slices`` (pass the
    real training slices; their masks are not read). Raises DataError when the slices hold no
    contrast to learn from."""
    if intensity == "HU":
        return HU_SCALE
    real = [s for s in slices if not s.is_synthetic]
    if not real:
        raise DataError(
            f"paste-in on {intensity} intensities learns where lung and tissue lie from the "
            "training slices, and there are none"
        )
    step = max(1, len(real) // _POOL_SLICES)
    pooled = np.concatenate([np.asarray(s.hu, np.float32)[::2, ::2].ravel() for s in real[::step]])
    try:
        t = otsu_threshold(pooled)
    except ValueError:
        raise DataError(
            f"the training slices are uniform ({intensity} value {float(pooled[0]):g}): "
            "no lung or tissue to paste tumours into"
        ) from None
    dark = pooled[pooled < t]
    return PasteScale(intensity, float(pooled.min()), float(pooled.max()), float(np.median(dark)), t, t)


def canvas_site(
    canvas: Slice, scale: PasteScale, *, clearance_px: float, max_row: int | None = None, match_noise: bool = False
) -> tuple[np.ndarray, np.ndarray, float]:
    """(lung, allowed region, noise) of one canvas for :func:`augforge.synthesis.paste_into_canvases`.

    Allowed: lung pixels below the scale's dense threshold, ``clearance_px`` from anything else
    (:func:`augforge.synthesis.allowed_region`), and, on a canvas that has a tumour already, more than
    ``max(clearance_px, 1) + 1`` pixels from it (a ground-glass tumour lies below the dense threshold,
    so the region alone would not exclude it). Noise: the canvas's pixel noise in the allowed region
    when ``match_noise``, else 0.
    """
    lung = scale.lung(canvas)
    allowed = allowed_region(canvas.hu, lung, vessel_hu=scale.dense, clearance_px=clearance_px, max_row=max_row)
    if canvas.has_tumour:
        gap = ndimage.distance_transform_edt(np.asarray(canvas.mask) == 0)
        allowed &= gap > max(clearance_px, 1.0) + 1.0
    noise = estimate_noise_hu(canvas.hu, allowed) if match_noise else 0.0
    return lung, allowed, noise


def paste_canvases(
    train: Sequence[Slice], healthy: Sequence[Slice], choice: str, *, who: str, log: Callable[[str], None] = print
) -> list[Slice]:
    """The slices tumours are pasted into.

    choice "healthy": the dataset's healthy slices; where it has none (crop exports such as the LIDC
    per-slice one hold tumour slices only), the real training slices, with a line in the log (the
    tumour each already has is kept clear of, see :func:`canvas_site`). "train": the real training
    slices. Never a test slice: both come from what a trial's ``prepare`` receives.
    """
    real = [s for s in train if not s.is_synthetic]
    if choice == "train":
        return real
    if choice != "healthy":
        raise ValueError(f"canvases must be 'healthy' or 'train', got {choice!r}")
    if healthy:
        return list(healthy)
    log(
        f"{who}: the dataset has no healthy slices; pasting into the {len(real)} real training slices, "
        "clear of the tumour each already has"
    )
    return real
