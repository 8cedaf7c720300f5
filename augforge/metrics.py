"""Per-image segmentation metrics: Dice, IoU, precision, recall and the 95th-percentile Hausdorff
distance in millimetres. Pure numpy/scipy functions of boolean masks.

Shapes: a prediction and its ground truth are boolean arrays of the same shape, either one image
(H, W) or a batch (N, H, W); count-based metrics return a float for an image and an (N,) float64
array for a batch.

Empty masks are handled explicitly, never by a smoothing epsilon:

==================  ==============  ==============  ===========================
prediction / truth  both empty      one empty       both non-empty
==================  ==============  ==============  ===========================
Dice, IoU           1.0             0.0             usual formula
precision           1.0             0.0             TP / (TP + FP)
recall              1.0             0.0             TP / (TP + FN)
HD95 (mm)           0.0             NaN (undefined) max of the two directed 95th percentiles
==================  ==============  ==============  ===========================

The seed paper's per-image Dice returned 0 when both masks were empty. Its test slices all contain a
tumour, so the difference only matters for healthy slices; here a correct "nothing there" scores 1.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["METRIC_NAMES", "confusion_counts", "dice", "hd95", "iou", "precision", "recall", "segmentation_metrics"]

#: The per-image metrics :func:`segmentation_metrics` returns, in report order.
METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "precision", "recall", "hd95_mm")


def _as_batch(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    pred = np.asarray(pred).astype(bool, copy=False)
    truth = np.asarray(truth).astype(bool, copy=False)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    if pred.ndim == 2:
        return pred[None], truth[None], True
    if pred.ndim != 3:
        raise ValueError(f"expected (H, W) or (N, H, W) masks, got shape {pred.shape}")
    return pred, truth, False


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True-positive, false-positive and false-negative pixel counts.

    pred, truth: (H, W) or (N, H, W) boolean. Returns three (N,) int64 arrays ((1,) for one image).
    """
    p, t, _ = _as_batch(pred, truth)
    axes = (1, 2)
    tp = np.count_nonzero(p & t, axis=axes).astype(np.int64)
    fp = np.count_nonzero(p & ~t, axis=axes).astype(np.int64)
    fn = np.count_nonzero(~p & t, axis=axes).astype(np.int64)
    return tp, fp, fn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, with 1.0 where den == 0 (callers pass denominators that vanish only when both masks
    are empty, the case every metric here scores as perfect agreement)."""
    out = np.ones(num.shape, dtype=np.float64)
    nz = den > 0
    out[nz] = num[nz] / den[nz]
    return out


def _from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Dice, IoU, precision and recall of (N,) pixel counts, with the empty-mask rules of the table."""
    tpf = tp.astype(np.float64)
    # An empty prediction (TP + FP = 0) on a tumour gets precision 0, not 1: it missed the tumour.
    # Symmetrically, a prediction on an empty truth gets recall 0. Both empty: 1 everywhere.
    prec_den = np.where((tp + fp == 0) & (fn > 0), 1, tp + fp)
    rec_den = np.where((tp + fn == 0) & (fp > 0), 1, tp + fn)
    return {
        "dice": _ratio(2.0 * tpf, 2 * tp + fp + fn),
        "iou": _ratio(tpf, tp + fp + fn),
        "precision": _ratio(tpf, prec_den),
        "recall": _ratio(tpf, rec_den),
    }


def _count_metric(name: str, pred: np.ndarray, truth: np.ndarray) -> np.ndarray | float:
    _, _, single = _as_batch(pred, truth)
    values = _from_counts(*confusion_counts(pred, truth))[name]
    return float(values[0]) if single else values


def dice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray | float:
    """Dice = 2 TP / (2 TP + FP + FN); 1 when both masks are empty. (H, W) -> float, (N, H, W) -> (N,)."""
    return _count_metric("dice", pred, truth)


def iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray | float:
    """Intersection over union = TP / (TP + FP + FN); 1 when both masks are empty."""
    return _count_metric("iou", pred, truth)


def precision(pred: np.ndarray, truth: np.ndarray) -> np.ndarray | float:
    """TP / (TP + FP); 1 when both are empty, 0 when only the prediction is empty (a missed tumour)."""
    return _count_metric("precision", pred, truth)


def recall(pred: np.ndarray, truth: np.ndarray) -> np.ndarray | float:
    """TP / (TP + FN); 1 when both are empty, 0 when only the truth is empty (all false alarm)."""
    return _count_metric("recall", pred, truth)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a 2-D mask: the mask minus its erosion (8-connected structuring element)."""
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), border_value=0)
    return mask & ~eroded


def hd95(pred: np.ndarray, truth: np.ndarray, spacing_mm: float | tuple[float, float]) -> float:
    """95th-percentile symmetric Hausdorff distance between the mask boundaries, in millimetres.

    pred, truth: (H, W) boolean. spacing_mm: pixel spacing (row, column) in mm, or one number for
    square pixels. Each boundary's distances to the other boundary come from a Euclidean distance
    transform (no loop over pixels); the result is the larger of the two directed 95th percentiles
    (the convention of MONAI's ``compute_hausdorff_distance(percentile=95)``).
    Returns 0.0 when both masks are empty and NaN when exactly one is.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"hd95 needs two (H, W) masks of one shape, got {pred.shape} and {truth.shape}")
    has_p, has_t = pred.any(), truth.any()
    if not has_p and not has_t:
        return 0.0
    if not (has_p and has_t):
        return float("nan")
    sampling = (float(spacing_mm),) * 2 if np.isscalar(spacing_mm) else tuple(map(float, spacing_mm))
    # Euclidean distances between points of the two masks do not leave their joint bounding box, so
    # the transforms run on that crop (a 1-pixel frame keeps border pixels on the surface).
    rows, cols = np.nonzero(pred | truth)
    window = (slice(max(rows.min() - 1, 0), rows.max() + 2), slice(max(cols.min() - 1, 0), cols.max() + 2))
    sp, st = _surface(pred[window]), _surface(truth[window])
    # distance_transform_edt measures the distance to the nearest zero, so invert the surfaces.
    to_truth = ndimage.distance_transform_edt(~st, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=sampling)
    return float(max(np.percentile(to_truth[sp], 95), np.percentile(to_pred[st], 95)))


def segmentation_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing_mm: np.ndarray | list[float] | float
) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRIC_NAMES` for a batch of images.

    pred, truth: (N, H, W) boolean. spacing_mm: (N,) pixel spacing of each image in mm (or one number).
    Returns ``{name: (N,) float64}`` plus ``true_px`` and ``pred_px`` (N,) int64 pixel counts.
    """
    p, t, _ = _as_batch(pred, truth)
    n = p.shape[0]
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (n,))
    tp, fp, fn = confusion_counts(p, t)
    out = _from_counts(tp, fp, fn)
    out["hd95_mm"] = np.array([hd95(p[i], t[i], spacing[i]) for i in range(n)], dtype=np.float64)
    out["true_px"] = (tp + fn).astype(np.int64)
    out["pred_px"] = (tp + fp).astype(np.int64)
    return out
