"""Checks every loader applies, each failing with one :class:`DataError` line naming the file."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from augforge.data.records import LUNG_RADS_CLASSES
from augforge.errors import DataError

_LABEL_ALIASES = (
    {c: c for c in LUNG_RADS_CLASSES}
    | {c[2:]: c for c in LUNG_RADS_CLASSES}
    | {f"LUNG-RADS {c[2:]}": c for c in LUNG_RADS_CLASSES}
)


def label(value: Any, where: str) -> str:
    """A Lung-RADS class from "LR4A", "4a", "lung-rads 4A", 2, ...; DataError otherwise."""
    text = str(value).strip().upper().replace("_", "")
    text = text.removesuffix(".0")  # numbers read from CSV or pandas: 2.0
    try:
        return _LABEL_ALIASES[text]
    except KeyError:
        raise DataError(f"{where}: label {value!r} is not a Lung-RADS class ({', '.join(LUNG_RADS_CLASSES)})") from None


def hu_slice(hu: Any, where: str) -> np.ndarray:
    """(H, W) float32 HU; DataError for a wrong rank, NaN/inf, or a constant slice."""
    a = np.asarray(hu)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{where}: HU array has dtype {a.dtype}; expected numbers")
    a = np.squeeze(a) if a.ndim > 2 else a
    if a.ndim != 2 or min(a.shape) < 8:
        raise DataError(f"{where}: HU array has shape {np.shape(hu)}; expected one 2-D slice")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise DataError(f"{where}: HU array contains NaN or infinite values")
    if a.min() == a.max():
        raise DataError(f"{where}: HU array is constant ({a.min():g}); not a CT slice")
    return a


def mask_slice(mask: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    """(H, W) uint8 {0, 1}; DataError for a shape other than ``shape`` or values other than 0/1
    (255 is taken as 1: an 8-bit mask image)."""
    m = np.asarray(mask)
    m = np.squeeze(m) if m.ndim > 2 else m
    if m.shape != tuple(shape):
        raise DataError(f"{where}: mask shape {m.shape} does not match the image shape {tuple(shape)}")
    if m.dtype == bool:
        return m.astype(np.uint8)
    if not np.issubdtype(m.dtype, np.number) or not np.isfinite(m).all():
        raise DataError(f"{where}: mask is not numeric 0/1")
    values = np.unique(m)
    if set(values.tolist()) <= {0, 1}:
        return m.astype(np.uint8)
    if set(values.tolist()) <= {0, 255}:
        return (m > 0).astype(np.uint8)
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if len(values) > 6 else "")
    raise DataError(f"{where}: mask is not binary (values {shown}); expected 0 and 1")


def dataset(records: Sequence[dict[str, Any]], masks: np.ndarray, where: str) -> None:
    """Split-level checks: not empty, a test split with a tumour, no patient in train and test."""
    if not records:
        raise DataError(f"{where}: the dataset is empty")
    splits = Counter(r["split"] for r in records)
    if not splits.get("train"):
        raise DataError(f"{where}: no training slices")
    test = [i for i, r in enumerate(records) if r["split"] == "test"]
    if not test or not any(masks[i].any() for i in test):
        raise DataError(f"{where}: the test split has no slice with a tumour; evaluation needs at least one")
    train_patients = {r["patient"] for r in records if r["split"] == "train"}
    both = sorted(train_patients & {r["patient"] for r in records if r["split"] == "test"})
    if both:
        raise DataError(
            f"{where}: patient {both[0]!r} is in both train and test"
            + (f" (and {len(both) - 1} more)" if len(both) > 1 else "")
        )


def same_shape(shapes: dict[str, tuple[int, ...]], where: str) -> tuple[int, ...]:
    """The one shape of all slices; DataError naming two files that differ."""
    distinct = {}
    for name, shape in shapes.items():
        distinct.setdefault(shape, name)
    if len(distinct) > 1:
        (s1, n1), (s2, n2) = list(distinct.items())[:2]
        raise DataError(f"{where}: slices differ in shape ({n1}: {s1}, {n2}: {s2}); resample them to one size")
    return next(iter(distinct)) if distinct else (0, 0)
