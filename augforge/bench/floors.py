"""Floors: what predictors that learn nothing score on the same test images as the strategies.

A Dice figure means little without the score of a rule that needs no training. Every study scores
three such predictors on its test split and the report puts them beside the strategies, with the
same statistics (docs/statistics.md, "Floors"):

``empty``           predicts no tumour anywhere;
``centre-disk``     a disk of the training split's median tumour area (in pixels) at the image centre;
``threshold-blob``  the largest 8-connected blob of pixels above ``THRESHOLD_HU`` inside the slice's
                    lung field (thresholded from the image alone, never grown), i.e. "the brightest
                    thing in the lung is the tumour".

None of them looks at a test mask; ``centre-disk`` reads the training masks' areas only. The rule
uses the plain lung field whatever the network sees (``data.input``): a grown field or the whole
slice would make "the largest bright blob" the chest wall, a floor nobody needs beating. So a
floor depends on the dataset's content only, not on seeds, strategies or the input setting: floors
are computed once per dataset (:func:`floor_key`) when ``augforge bench`` has the data loaded,
and stored in the study folder's ``floors.csv`` so that ``augforge report`` can rank without data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from augforge.data.processing.lungfield import lung_field
from augforge.data.records import Dataset, Slice
from augforge.metrics import METRIC_NAMES, segmentation_metrics

__all__ = [
    "CEILING",
    "FLOORS",
    "THRESHOLD_HU",
    "floor_key",
    "floor_masks",
    "floor_rows",
    "median_tumour_area",
    "reader_agreement",
]

FLOORS: tuple[str, ...] = ("empty", "centre-disk", "threshold-blob")
#: The ceiling where a dataset has several readers: each reader against the consensus of the others.
CEILING = "readers"
#: Soft tissue starts near -500 HU in lung CT: nodules, vessels and atelectasis lie above it.
THRESHOLD_HU = -500.0


#: Bump when a floor's rule changes: floors stored under an older key are computed again.
FLOORS_VERSION = 1


def floor_key(fingerprint: str) -> str:
    """Which stored floors belong to a dataset: its content fingerprint and the rules' version."""
    return f"{fingerprint}/floors-v{FLOORS_VERSION}"


def median_tumour_area(train: Sequence[Slice]) -> float:
    """Median tumour area in pixels over the training slices that have a tumour (0 when none)."""
    areas = [int(s.mask.sum()) for s in train if s.mask.any()]
    return float(np.median(areas)) if areas else 0.0


def _centre_disk(shape: tuple[int, int], area_px: float) -> np.ndarray:
    h, w = shape
    radius = np.sqrt(area_px / np.pi)
    yy, xx = np.mgrid[:h, :w]
    return (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= radius**2


def _largest_blob(candidate: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(candidate.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(candidate.shape, bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def _otsu(x: np.ndarray) -> np.ndarray:
    """Pixels above Otsu's threshold of the slice (for intensities without a physical scale)."""
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, bool)
    u8 = np.round((x - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return u8 > t


def floor_masks(s: Slice, area_px: float, intensity: str = "HU") -> dict[str, np.ndarray]:
    """Each floor's (H, W) bool prediction for one slice; reads the image, never the mask.

    ``threshold-blob`` needs Hounsfield units for its fixed threshold and the lung field; on data
    without them (``intensity`` other than "HU", e.g. 8-bit crops) it takes the largest blob above
    the slice's Otsu threshold instead, anywhere in the slice."""
    shape = s.hu.shape
    if intensity == "HU":
        field = np.asarray(s.lung_field, bool) if s.lung_field is not None else lung_field(s.hu)
        bright = field & (np.asarray(s.hu) > THRESHOLD_HU)
    else:
        bright = _otsu(np.asarray(s.hu, np.float32))
    return {
        "empty": np.zeros(shape, bool),
        "centre-disk": _centre_disk(shape, area_px),
        "threshold-blob": _largest_blob(bright),
    }


def reader_agreement(readers: np.ndarray, consensus: int) -> np.ndarray:
    """(R,) Dice of each reader's mask against the consensus of the other readers (at least
    ``min(consensus, R - 1)`` of them), on one slice; ``readers`` is (R, H, W)."""
    r = readers.shape[0]
    k = max(1, min(consensus, r - 1))
    out = np.zeros(r)
    for i in range(r):
        others = np.delete(readers, i, axis=0).sum(axis=0) >= k
        out[i] = segmentation_metrics(readers[i].astype(bool)[None], others[None], [1.0])["dice"][0]
    return out


def floor_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """Per-image rows of every floor on ``dataset.test``: ``floor``, ``key`` (:func:`floor_key`),
    then the columns of :func:`augforge.train.evaluate.evaluate`'s rows."""
    key = floor_key(dataset.fingerprint)
    area = median_tumour_area(dataset.train)
    intensity = str(dataset.meta.get("intensity", "HU"))
    preds = [floor_masks(s, area, intensity) for s in dataset.test]
    rows: list[dict[str, Any]] = []
    for name in FLOORS:
        for s, p in zip(dataset.test, preds):
            m = segmentation_metrics(p[name][None], s.mask.astype(bool)[None], [s.spacing_mm])
            rows.append(
                {
                    "key": key,
                    "floor": name,
                    "image": s.id,
                    "class": s.label,
                    "spacing_mm": float(s.spacing_mm),
                    **{k: float(m[k][0]) for k in METRIC_NAMES},
                    "true_px": int(m["true_px"][0]),
                    "pred_px": int(m["pred_px"][0]),
                }
            )
    if dataset.test and all(s.readers is not None and len(s.readers) > 1 for s in dataset.test):
        consensus = int(dataset.meta.get("consensus", 2))
        for s in dataset.test:
            # Each reader against the others' consensus; the image's score is the mean over readers.
            agree = reader_agreement(np.asarray(s.readers), consensus)
            rows.append(
                {
                    "key": key,
                    "floor": CEILING,
                    "image": s.id,
                    "class": s.label,
                    "spacing_mm": float(s.spacing_mm),
                    "dice": float(agree.mean()),
                    "iou": float("nan"),
                    "precision": float("nan"),
                    "recall": float("nan"),
                    "hd95_mm": float("nan"),
                    "true_px": int(s.mask.sum()),
                    "pred_px": -1,
                }
            )
    return rows
