"""Lung-field extraction from HU, the way the seed paper made its ``hu_array`` (lung-only input).

Threshold the slice to air-like HU, label the connected components, drop the ones that touch the
image border (the air around the patient, the table foam) and the small ones (trachea, bronchi,
bowel gas), and fill the holes of what remains so that vessels and nodules inside the lungs belong
to the field. Nodules that touch the chest wall or the mediastinum are left out, as in the paper.

The field is computed from the image alone, for every source and split: no tumour mask is ever
added to it, since the outline of the field would then trace the label and hand it to the network
(docs/data.md, "What reaches the network").
"""

from __future__ import annotations

import cv2
import numpy as np

from augforge.data.records import NON_LUNG_HU

#: Pixels below this HU are air-like (lung parenchyma is about -900..-700, soft tissue above -100).
AIR_THRESHOLD_HU = -300.0
#: Components smaller than this share of the image are not lung (the trachea is about 0.2 %).
MIN_AREA_FRACTION = 0.0025


def lung_field(
    hu: np.ndarray, threshold_hu: float = AIR_THRESHOLD_HU, min_area_fraction: float = MIN_AREA_FRACTION
) -> np.ndarray:
    """Lung field of one axial slice.

    hu: (H, W) Hounsfield units (any real dtype). Returns (H, W) bool: True inside the lungs,
    including the vessels and nodules that the lungs enclose. All False when no lung is found.
    """
    air = (np.asarray(hu) < threshold_hu).astype(np.uint8)
    # 4-connectivity, so that outside air cannot leak into a lung through a diagonal pixel gap.
    _, labels, stats, _ = cv2.connectedComponentsWithStats(air, connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area_fraction * air.size
    keep[0] = False  # label 0 is the non-air background
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    keep[np.unique(border)] = False
    field = keep[labels]
    return fill_holes(field) if field.any() else field


def fill_holes(field: np.ndarray) -> np.ndarray:
    """``field`` (H, W) bool with every region it encloses filled (4-connected background), by a
    flood fill from a one-pixel frame: ~30x faster than ``scipy.ndimage.binary_fill_holes``."""
    outside = cv2.copyMakeBorder((~field).astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)
    return field | (outside[1:-1, 1:-1] == 1)


def lung_fields(hu: np.ndarray) -> np.ndarray:
    """(N, H, W) bool lung fields of an (N, H, W) HU stack, each from its slice alone."""
    out = np.zeros(np.shape(hu), bool)
    for i, h in enumerate(hu):
        out[i] = lung_field(h)
    return out


def lung_only(hu: np.ndarray, field: np.ndarray) -> np.ndarray:
    """``hu`` inside ``field`` and ``NON_LUNG_HU`` elsewhere: (H, W) float32, the paper's ``hu_array``."""
    return np.where(field, hu, np.float32(NON_LUNG_HU)).astype(np.float32, copy=False)
