"""Where a tumour can go: every position at which a mask fits inside a slice's lung parenchyma.

A position is valid when every tumour pixel lands on lung parenchyma: inside the lung field, not on
a vessel or other dense structure (HU >= ``vessel_hu``; the seed paper used -100 HU), and at least
``clearance_px`` pixels away from the lung wall and from any vessel. The paper found these positions
by a brute-force correlation over every position; here the whole set comes from one correlation of
the forbidden-pixel map with the mask over the lungs' bounding box (the mask fits exactly where the
overlap count is 0; OpenCV correlates small masks directly and large ones by DFT, so the cost stays
near O(HW log HW) whatever the mask's size), and the clearance from one erosion by a disc.

Positions are the (row, col) of the mask's top-left corner in the slice.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["allowed_region", "pick_position", "valid_positions"]

#: Inside the lung, pixels at or above this HU are vessels, airway walls or other dense tissue.
VESSEL_HU: float = -100.0


def allowed_region(
    hu: np.ndarray,
    lung: np.ndarray,
    *,
    vessel_hu: float = VESSEL_HU,
    clearance_px: float = 1.0,
    max_row: int | None = None,
) -> np.ndarray:
    """Pixels a tumour may cover.

    hu:           (H, W) float, Hounsfield units.
    lung:         (H, W) bool, the lung field.
    vessel_hu:    lung pixels at or above this HU are forbidden (vessels, walls of airways).
    clearance_px: pixels within this distance (pixel centres, Euclidean) of a forbidden pixel are
                  forbidden too: the tumour neither touches the pleura nor sits on a vessel's edge.
    max_row:      forbid rows >= max_row (the paper kept tumours in the upper rows, < 350 of 512).
    Returns (H, W) bool.
    """
    ok = np.asarray(lung, bool) & (np.asarray(hu) < vessel_hu)
    if max_row is not None:
        ok[max(0, max_row) :] = False
    if clearance_px > 0 and ok.any():
        # Keep the pixels farther than clearance_px from every forbidden pixel centre (the same set
        # as a Euclidean distance transform > clearance_px): an erosion by a disc, ~20x faster. The
        # image border counts as forbidden, so the clearance holds at the edge too.
        r = int(np.floor(clearance_px))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disc = (yy**2 + xx**2 <= clearance_px**2).astype(np.uint8)
        ok = cv2.erode(ok.astype(np.uint8), disc, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return ok


def valid_positions(allowed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Top-left corners at which ``mask`` lies entirely inside ``allowed``.

    allowed: (H, W) bool, pixels the tumour may cover (see :func:`allowed_region`).
    mask:    (h, w) bool, the tumour; h <= H and w <= W.
    Returns (H - h + 1, W - w + 1) bool: ``out[r, c]`` is True iff
    ``allowed[r:r + h, c:c + w][mask].all()``. All False when the mask is larger than the slice.
    """
    allowed = np.asarray(allowed, bool)
    mask = np.asarray(mask, bool)
    (H, W), (h, w) = allowed.shape, mask.shape
    if h > H or w > W:
        return np.zeros((max(H - h + 1, 0), max(W - w + 1, 0)), bool)
    if not mask.any():
        return np.ones((H - h + 1, W - w + 1), bool)
    # Work only on the bounding box of the allowed pixels grown by the mask's size: a mask placed
    # farther out covers no allowed pixel, and the lungs cover a fraction of the slice.
    out = np.zeros((H - h + 1, W - w + 1), bool)
    rows, cols = np.nonzero(allowed)
    if rows.size < np.count_nonzero(mask):
        return out
    r0, r1 = max(rows.min() - (h - 1), 0), min(rows.max() + h, H)
    c0, c1 = max(cols.min() - (w - 1), 0), min(cols.max() + w, W)
    forbidden = (~allowed[r0:r1, c0:c1]).astype(np.float32)
    # overlap[r, c] = number of forbidden pixels under the mask placed at (r, c): a correlation,
    # which OpenCV computes directly for small masks and by DFT for large ones. With the anchor at
    # the kernel's top-left corner, the first (box - mask + 1) rows/columns are the positions where
    # the mask lies inside the box. Counts are integers: < 0.5 absorbs the DFT's rounding.
    overlap = cv2.filter2D(
        forbidden, cv2.CV_32F, mask.astype(np.float32), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT
    )
    n_r, n_c = forbidden.shape[0] - h + 1, forbidden.shape[1] - w + 1
    out[r0 : r0 + n_r, c0 : c0 + n_c] = overlap[:n_r, :n_c] < 0.5
    return out


def pick_position(valid: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """A uniformly random valid top-left corner ``(row, col)``, or None when there is none."""
    flat = np.flatnonzero(valid)
    if flat.size == 0:
        return None
    r, c = np.unravel_index(flat[rng.integers(flat.size)], valid.shape)
    return int(r), int(c)
