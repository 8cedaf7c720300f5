"""Paste a tumour into a slice: blend its HU into the parenchyma with a soft edge, update the labels.

Generic over where the tumour comes from (a generator's sample, a real tumour cut from another
slice): it takes a tumour HU patch and its mask. The edge is a linear ramp of ``feather_px`` pixels
centred on the mask's boundary, so no square patch edge and no hard cut-out rim remains; the label is
the mask itself, so image and mask stay aligned to the pixel. The slice's Lung-RADS class follows from
the pasted nodule's mean diameter and texture (:func:`augforge.data.processing.lungrads.classify`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from augforge.data.processing.lungfield import lung_field
from augforge.data.processing.lungrads import classify
from augforge.data.records import LUNG_RADS_CLASSES, NON_LUNG_HU, Slice
from augforge.data.sources.lidc import axes_px
from augforge.synthesis.placement import pick_position, valid_positions

__all__ = [
    "NoduleMeasurements",
    "blend_tumour",
    "canvas_lung",
    "clean_mask",
    "estimate_noise_hu",
    "measure_nodule",
    "paste_into_canvases",
    "paste_tumour",
    "resize_patch",
]

#: Canvases tried for one tumour at one size, sizes tried (each ``SHRINK`` times the last).
CANVAS_TRIES, SHRINK_TRIES, SHRINK = 8, 4, 0.8

#: Tumour pixels at or above this HU count as solid (ground glass lies around -700 to -250 HU,
#: solid tissue around 0 to 60 HU).
SOLID_HU: float = -200.0
#: Solid share of a nodule's area from which it counts as solid, and below which as ground glass.
SOLID_FRACTION, GROUND_GLASS_FRACTION = 0.8, 0.2

_EIGHT = np.ones((3, 3), bool)


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` with its holes filled; (h, w) bool."""
    comps, n = ndimage.label(np.asarray(mask, bool), structure=_EIGHT)
    if n == 0:
        return np.zeros(mask.shape, bool)
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones(mask.shape), comps, range(1, n + 1))))
    return ndimage.binary_fill_holes(comps == largest)


def resize_patch(hu: np.ndarray, mask: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize a tumour patch to ``shape`` = (rows, cols) pixels.

    hu: (h, w) HU; mask: (h, w) bool. Returns (rows, cols) float32 HU and the resized mask
    (bool, cleaned by :func:`clean_mask`; empty when the tumour vanished). HU outside the mask are
    replaced by the nearest tumour HU first, so the resized rim holds no background.
    """
    mask = np.asarray(mask, bool)
    hu = np.asarray(hu, np.float32)
    if mask.any() and not mask.all():
        _, (ri, ci) = ndimage.distance_transform_edt(~mask, return_indices=True)
        hu = hu[ri, ci]
    rows, cols = int(shape[0]), int(shape[1])
    interp = cv2.INTER_AREA if rows < hu.shape[0] or cols < hu.shape[1] else cv2.INTER_LINEAR
    hu_r = cv2.resize(hu, (cols, rows), interpolation=interp)
    m_r = cv2.resize(mask.astype(np.float32), (cols, rows), interpolation=interp) >= 0.5
    return hu_r.astype(np.float32), clean_mask(m_r)


@dataclass(frozen=True)
class NoduleMeasurements:
    """Lung-RADS measurements of one nodule (sizes are mean diameters in mm)."""

    diameter_mm: float
    solid_diameter_mm: float
    texture: int  # LIDC rating: 1 ground glass, 3 part-solid, 5 solid
    label: str  # Lung-RADS class


def _mean_diameter_px(mask: np.ndarray) -> float:
    """Mean of long and short axis of a pixel mask, in pixels. Pixel centres span one pixel less
    than the pixels themselves, hence the +1 (a 1-pixel nodule measures 1 pixel)."""
    pts = np.argwhere(mask)[:, ::-1].astype(np.float64)  # (x, y)
    if len(pts) == 0:
        return 0.0
    long_axis, short_axis = axes_px(pts)
    return 0.5 * (long_axis + short_axis) + 1.0


def measure_nodule(
    hu: np.ndarray, mask: np.ndarray, spacing_mm: float, *, solid_hu: float = SOLID_HU
) -> NoduleMeasurements:
    """Mean diameter, solid-part diameter, texture and Lung-RADS class of the nodule ``mask``.

    hu: (h, w) HU; mask: (h, w) bool, non-empty; spacing_mm: pixel side in mm. Texture is read from
    the HU: the share of the nodule's interior at or above ``solid_hu`` (on other scales, the scale's
    own solid threshold, see :mod:`augforge.synthesis.intensity`) decides solid (>= 0.8), part-solid
    or ground glass (< 0.2); the solid part's diameter is that of its largest piece.
    """
    mask = np.asarray(mask, bool)
    solid = mask & (np.asarray(hu) >= solid_hu)
    # The solid share is read away from the edge, where partial volume dims even a solid nodule.
    interior = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] > 1.5
    core = interior if interior.sum() >= 4 else mask
    fraction = (solid & core).sum() / max(core.sum(), 1)
    texture = 5 if fraction >= SOLID_FRACTION else 1 if fraction < GROUND_GLASS_FRACTION else 3
    diameter = _mean_diameter_px(mask) * spacing_mm
    solid_diameter = _mean_diameter_px(clean_mask(solid)) * spacing_mm if solid.any() else 0.0
    label = classify(diameter, texture, solid_diameter if texture == 3 else None)
    return NoduleMeasurements(round(diameter, 2), round(solid_diameter, 2), texture, label)


def estimate_noise_hu(hu: np.ndarray, region: np.ndarray) -> float:
    """Standard deviation (HU) of the pixel noise inside ``region``, robust to edges and vessels.

    From the horizontal neighbour differences (their spread is sqrt(2) times the noise's) and the
    median absolute deviation. hu: (H, W); region: (H, W) bool. 0 when the region is too small.
    """
    both = region[:, 1:] & region[:, :-1]
    if both.sum() < 16:
        return 0.0
    d = np.diff(np.asarray(hu, np.float32), axis=1)[both]
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2))


def blend_tumour(
    hu: np.ndarray,
    tumour_hu: np.ndarray,
    tumour_mask: np.ndarray,
    position: tuple[int, int],
    *,
    feather_px: float = 1.5,
    noise_hu: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend a tumour into ``hu`` with its top-left corner at ``position`` = (row, col).

    hu: (H, W) HU; tumour_hu: (h, w) HU; tumour_mask: (h, w) bool, inside the slice at ``position``.
    feather_px: width of the soft edge in pixels (0: a hard cut-out).
    noise_hu:   standard deviation of Gaussian noise added to the tumour (match a smooth generated
                patch to the scanner noise of the slice); needs ``rng``.
    Returns the new (H, W) float32 HU and the (H, W) uint8 mask of the pasted tumour.
    """
    H, W = hu.shape
    m = np.asarray(tumour_mask, bool)
    h, w = m.shape
    r, c = int(position[0]), int(position[1])
    if not (0 <= r <= H - h and 0 <= c <= W - w):
        raise ValueError(f"tumour of {h}x{w} pixels at {position} lies outside the {H}x{W} slice")
    # Work on the patch grown by the soft edge's reach, clipped to the slice.
    p = math.ceil(feather_px / 2) + 1
    R0, R1, C0, C1 = max(r - p, 0), min(r + h + p, H), max(c - p, 0), min(c + w + p, W)
    big = np.zeros((R1 - R0, C1 - C0), bool)
    big[r - R0 : r - R0 + h, c - C0 : c - C0 + w] = m
    values = np.zeros(big.shape, np.float32)
    values[r - R0 : r - R0 + h, c - C0 : c - C0 + w] = tumour_hu
    # Outside the mask the ramp needs tumour values too: copy the nearest tumour pixel's.
    dist_out, (ri, ci) = ndimage.distance_transform_edt(~big, return_indices=True)
    values = values[ri, ci]
    if feather_px > 0:
        # Signed distance of pixel centres to the mask's boundary (> 0 inside), ramped over feather_px.
        signed = np.where(big, ndimage.distance_transform_edt(big) - 0.5, 0.5 - dist_out)
        alpha = np.clip(0.5 + signed / feather_px, 0.0, 1.0).astype(np.float32)
    else:
        alpha = big.astype(np.float32)
    if noise_hu > 0:
        if rng is None:
            raise ValueError("noise_hu > 0 needs an rng")
        values = values + rng.normal(0.0, noise_hu, values.shape).astype(np.float32)
    out = np.array(hu, np.float32, copy=True)
    region = out[R0:R1, C0:C1]
    out[R0:R1, C0:C1] = (1.0 - alpha) * region + alpha * values
    placed = np.zeros((H, W), np.uint8)
    placed[R0:R1, C0:C1] = big
    return out, placed


def canvas_lung(canvas: Slice) -> np.ndarray:
    """The lung field of a slice, (H, W) bool: the one its data source stored, else recomputed."""
    if canvas.lung_field is not None:
        return np.asarray(canvas.lung_field, bool)
    return lung_field(canvas.hu)


def paste_tumour(
    canvas: Slice,
    tumour_hu: np.ndarray,
    tumour_mask: np.ndarray,
    position: tuple[int, int],
    *,
    slice_id: str,
    source: str,
    lung: np.ndarray | None = None,
    feather_px: float = 1.5,
    noise_hu: float = 0.0,
    rng: np.random.Generator | None = None,
    provenance: dict[str, Any] | None = None,
    solid_hu: float = SOLID_HU,
) -> Slice:
    """A new slice: ``canvas`` with the tumour pasted at ``position`` (see :func:`blend_tumour`).

    ``hu`` and ``lung_hu`` carry the blended tumour (``lung_hu`` only inside ``lung``, by default
    :func:`canvas_lung`); ``mask`` is the canvas's mask plus the tumour's; ``label`` is the higher of
    the canvas's class and the pasted nodule's; ``provenance`` records the canvas, the position and
    the nodule's measurements besides what the caller passes. ``image`` is None: the data layer
    preprocesses the new slice like any other.
    """
    lung = canvas_lung(canvas) if lung is None else np.asarray(lung, bool)
    hu, placed = blend_tumour(
        canvas.hu, tumour_hu, tumour_mask, position, feather_px=feather_px, noise_hu=noise_hu, rng=rng
    )
    r, c = position
    h, w = np.shape(tumour_mask)
    nodule = measure_nodule(hu[r : r + h, c : c + w], tumour_mask, canvas.spacing_mm, solid_hu=solid_hu)
    label = max(canvas.label, nodule.label, key=LUNG_RADS_CLASSES.index)
    facts = {
        "canvas": canvas.id,
        "position": [int(r), int(c)],
        "size_px": [int(h), int(w)],
        **{k: v for k, v in dataclasses.asdict(nodule).items() if k != "label"},
        "nodule_label": nodule.label,
    }
    return Slice(
        id=slice_id,
        hu=hu,
        lung_hu=np.where(lung, hu, np.float32(NON_LUNG_HU)).astype(np.float32),
        mask=np.maximum(np.asarray(canvas.mask, np.uint8), placed),
        label=label,
        spacing_mm=canvas.spacing_mm,
        patient=canvas.patient,
        source=source,
        provenance={**facts, **(provenance or {})},
        image=None,
        lung_field=lung,
    )


def paste_into_canvases(
    canvases: Sequence[Slice],
    order: np.ndarray,
    start: int,
    tumour_hu: np.ndarray,
    tumour_mask: np.ndarray,
    *,
    site: Callable[[int], tuple[np.ndarray, np.ndarray, float]],
    shape: Callable[[Slice, float], tuple[int, int]],
    rng: np.random.Generator,
    slice_id: str,
    source: str,
    feather_px: float,
    paste_rng: np.random.Generator | None = None,
    provenance: dict[str, Any] | None = None,
    solid_hu: float = SOLID_HU,
) -> Slice | None:
    """Paste one tumour patch into the first canvas with room for it; None when none has room.

    Canvases are tried in ``order`` (indices into ``canvases``) from position ``start``, cycling,
    ``CANVAS_TRIES`` of them; then the tumour is shrunk by ``SHRINK`` and tried again, up to
    ``SHRINK_TRIES`` sizes. The strategies that paste (DCGAN, copy-paste) share this search.

    site(k):          (lung field, allowed region, noise HU) of canvas ``k`` (the caller caches it).
    shape(canvas, f): the patch's (rows, cols) in that canvas's pixels at size factor ``f`` (<= 1).
    rng:              draws the position; ``paste_rng`` draws the pasted noise (None: no noise draw).
    solid_hu:         the solid-tissue threshold of the canvases' scale (texture of the pasted nodule).
    """
    for attempt in range(CANVAS_TRIES * SHRINK_TRIES):
        k = int(order[(start + attempt) % len(order)])
        canvas = canvases[k]
        lung, allowed, noise_hu = site(k)
        t_hu, t_mask = resize_patch(tumour_hu, tumour_mask, shape(canvas, SHRINK ** (attempt // CANVAS_TRIES)))
        if not t_mask.any():
            continue
        pos = pick_position(valid_positions(allowed, t_mask), rng)
        if pos is None:
            continue
        return paste_tumour(
            canvas,
            t_hu,
            t_mask,
            pos,
            slice_id=slice_id,
            source=source,
            lung=lung,
            feather_px=feather_px,
            noise_hu=noise_hu,
            rng=paste_rng,
            provenance=provenance,
            solid_hu=solid_hu,
        )
    return None
