"""Tumour regions of interest: the patches a tumour generator learns from.

Each connected tumour of each training slice becomes one patch: a crop around its bounding box with a
margin, resized to ``size`` x ``size``, holding the tumour's HU inside its mask and a constant
``background_hu`` outside (edge pixels mixed by coverage), plus the mask itself. The seed paper (reference/PAPER_PROTOCOL.md) used
``mask * hu_array_old`` cropped to the bounding box with a 10-pixel margin, resized to 64x64, with
the zero background set to 2000 HU; ``extract_rois(slices, size=64, margin_px=10,
background_hu=2000)`` does that. The crop's size in mm is kept, so a generated patch can be pasted
back at the size real tumours have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from augforge.data.records import Slice
from augforge.errors import DataError

__all__ = ["HUScale", "TumourROIs", "extract_rois"]

#: Typical HU of aerated lung parenchyma: a neutral background for tumour patches.
PARENCHYMA_HU: float = -850.0


@dataclass(frozen=True)
class HUScale:
    """A linear map between HU in ``[lo, hi]`` and the generator's value range ``[-1, 1]``."""

    lo: float
    hi: float

    def to_unit(self, hu: np.ndarray) -> np.ndarray:
        """HU -> [-1, 1] (values outside [lo, hi] are clipped), float32."""
        hu = np.clip(np.asarray(hu, np.float32), self.lo, self.hi)
        return (2.0 * (hu - self.lo) / (self.hi - self.lo) - 1.0).astype(np.float32)

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """[-1, 1] -> HU, float32."""
        x = np.clip(np.asarray(x, np.float32), -1.0, 1.0)
        return ((x + 1.0) * 0.5 * (self.hi - self.lo) + self.lo).astype(np.float32)


@dataclass
class TumourROIs:
    """N tumour patches from a training split.

    hu:        (N, S, S) float32: the tumour's HU, mixed with ``background_hu`` by ``coverage``.
    mask:      (N, S, S) uint8 in {0, 1}: ``coverage >= 0.5``.
    coverage:  (N, S, S) float32 in [0, 1]: the share of each patch pixel the tumour covers.
    crop_mm:   (N, 2) float64, height and width in mm of the region each patch was resized from.
    slice_ids: the id of the slice each patch came from (provenance: which slices a generator saw).
    labels:    the Lung-RADS class of that slice.
    """

    hu: np.ndarray
    mask: np.ndarray
    coverage: np.ndarray
    crop_mm: np.ndarray
    slice_ids: tuple[str, ...]
    labels: tuple[str, ...]
    background_hu: float

    def __len__(self) -> int:
        return len(self.slice_ids)

    @property
    def size(self) -> int:
        return int(self.hu.shape[-1])


def _extend_inside_values(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Copy the nearest inside pixel's value to every outside pixel, so that interpolating near the
    mask's edge never mixes in the background."""
    _, (ri, ci) = ndimage.distance_transform_edt(~inside, return_indices=True)
    return values[ri, ci]


def extract_rois(
    slices: Sequence[Slice],
    *,
    size: int = 64,
    margin_px: int = 10,
    margin_frac: float = 0.0,
    square: bool = False,
    background_hu: float = 2000.0,
    min_pixels: int = 4,
) -> TumourROIs:
    """One patch per connected tumour (8-connectivity, at least ``min_pixels`` pixels) of ``slices``.

    margin_px, margin_frac: the crop extends the tumour's bounding box by
        ``margin_px + margin_frac * max(box height, box width)`` pixels on every side.
    square: crop a square centred on the box (keeps the tumour's aspect ratio) instead of the
        margin-grown box itself (which resizing then stretches to a square, as the paper did).
    Raises DataError when no slice holds a tumour.
    """
    if size < 4:
        raise ValueError(f"ROI size must be at least 4 pixels, got {size}")
    his, masks, covers, crops, ids, labels = [], [], [], [], [], []
    structure = np.ones((3, 3), bool)
    for s in slices:
        if not s.has_tumour:
            continue
        comps, _ = ndimage.label(s.mask > 0, structure=structure)
        for k, box in enumerate(ndimage.find_objects(comps), start=1):
            comp = comps[box] == k
            if comp.sum() < min_pixels:
                continue
            (r0, r1), (c0, c1) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
            margin = margin_px + margin_frac * max(r1 - r0, c1 - c0)
            if square:
                side = max(r1 - r0, c1 - c0) + 2 * margin
                cr, cc = (r0 + r1) / 2, (c0 + c1) / 2
                r0, r1, c0, c1 = cr - side / 2, cr + side / 2, cc - side / 2, cc + side / 2
            else:
                r0, r1, c0, c1 = r0 - margin, r1 + margin, c0 - margin, c1 + margin
            r0, r1, c0, c1 = (round(v) for v in (r0, r1, c0, c1))
            # The crop may extend past the slice's edge: read it with zero padding (the mask is 0
            # there, and outside the mask only the background value survives).
            pad = max(0, -r0, -c0, r1 - s.shape[0], c1 - s.shape[1])
            m = np.pad(comps == k, pad)[r0 + pad : r1 + pad, c0 + pad : c1 + pad]
            hu = np.pad(s.hu.astype(np.float32), pad, mode="edge")[r0 + pad : r1 + pad, c0 + pad : c1 + pad]
            hu = _extend_inside_values(hu, m)
            shrink = (r1 - r0) > size or (c1 - c0) > size
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            hu_r = cv2.resize(hu, (size, size), interpolation=interp)
            cover = np.clip(cv2.resize(m.astype(np.float32), (size, size), interpolation=interp), 0, 1)
            m_r = cover >= 0.5
            if not m_r.any():  # a sliver lost in resizing: keep its most covered pixel
                m_r[np.unravel_index(np.argmax(cover), m_r.shape)] = True
            # Edge pixels mix tumour and background by their coverage, as a scanner's partial volume
            # does: no hard step for a generator to imitate.
            his.append((cover * hu_r + (1 - cover) * np.float32(background_hu)).astype(np.float32))
            masks.append(m_r.astype(np.uint8))
            covers.append(cover.astype(np.float32))
            crops.append(((r1 - r0) * s.spacing_mm, (c1 - c0) * s.spacing_mm))
            ids.append(s.id)
            labels.append(s.label)
    if not his:
        raise DataError(
            "the training split holds no tumour of at least "
            f"{min_pixels} pixels: a tumour generator has nothing to learn from"
        )
    return TumourROIs(
        hu=np.stack(his),
        mask=np.stack(masks),
        coverage=np.stack(covers),
        crop_mm=np.asarray(crops, np.float64),
        slice_ids=tuple(ids),
        labels=tuple(labels),
        background_hu=float(background_hu),
    )
