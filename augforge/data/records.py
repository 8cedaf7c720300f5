"""The one record type every dataset source produces: a 2-D CT slice with its tumour mask."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Lung-RADS classes used as slice labels. LR1 = healthy (no nodule): canvases for paste-in synthesis.
LUNG_RADS_CLASSES: tuple[str, ...] = ("LR1", "LR2", "LR3", "LR4A", "LR4B")

#: ``Slice.source`` of a slice a strategy made: this prefix, then the strategy's name.
SYNTHETIC_PREFIX = "synthetic:"

#: Value given to non-lung pixels in ``Slice.lung_hu`` (air; the paper's ``hu_array`` did the same).
NON_LUNG_HU: float = -1024.0


@dataclass
class Slice:
    """One axial CT slice.

    hu:         (H, W) float32, Hounsfield units, the whole slice.
    lung_hu:    (H, W) float32, HU inside the lung field, ``NON_LUNG_HU`` elsewhere (the U-Net input).
    mask:       (H, W) uint8 in {0, 1}, tumour pixels.
    label:      Lung-RADS class, one of ``LUNG_RADS_CLASSES``.
    spacing_mm: in-plane pixel spacing in millimetres (square pixels).
    id:         stable identifier, unique within a dataset.
    patient:    grouping key for splits: slices of one patient/scan never straddle train and test.
    source:     where the slice came from ("lidc-phantom", "mendeley", "folder", "lidc-dicom",
                "synthetic:<strategy>").
    provenance: free-form facts about the origin (LIDC scan and annotation ids, file names, ...).
    image:      (H, W) float32 in [0, 1], the preprocessed network input, filled by the data layer.
    lung_field: (H, W) bool, the lung field ``lung_hu`` was cut with (vessels and enclosed nodules
                included), computed from the image alone by the data layer; None when unknown
                (then recompute it with ``augforge.data.processing.lungfield.lung_field(hu)``).
    readers:    (R, H, W) uint8 {0, 1}, each reader's own mask where the source has several readers
                (``mask`` is then their consensus); None otherwise.

    ``hu`` holds the dataset's intensities: Hounsfield units unless the dataset says otherwise
    (``Dataset.meta["intensity"]``, e.g. ``"8-bit"`` for the LIDC per-slice export).

    ``hu`` and ``lung_hu`` may be given as :class:`Deferred`: the array is then made on first access
    and kept (a cached dataset converts its compact int16 HU slice by slice, only where a slice's
    HU are read, instead of the whole stack at load).
    """

    id: str
    hu: np.ndarray
    lung_hu: np.ndarray
    mask: np.ndarray
    label: str
    spacing_mm: float
    patient: str
    source: str
    provenance: dict[str, Any] = field(default_factory=dict)
    image: np.ndarray | None = None
    lung_field: np.ndarray | None = None
    readers: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)  # type: ignore[return-value]  # the mask's: reads no HU

    @property
    def has_tumour(self) -> bool:
        return bool(self.mask.any())

    @property
    def is_synthetic(self) -> bool:
        """Made by a strategy (``source`` is ``synthetic:<strategy>``), not read from the dataset."""
        return self.source.startswith(SYNTHETIC_PREFIX)

    @staticmethod
    def synthetic_source(strategy: str) -> str:
        """The ``source`` of a slice that ``strategy`` made."""
        return SYNTHETIC_PREFIX + strategy


class Deferred:
    """An array made on first access of a :class:`Slice` field: ``fn(*args)``, then kept.

    Module-level ``fn`` and array ``args`` keep a deferred slice picklable."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __call__(self) -> np.ndarray:
        return self.fn(*self.args)


def _deferrable(name: str) -> property:
    key = "_" + name

    def get(self: Slice) -> np.ndarray:
        value = self.__dict__[key]
        if isinstance(value, Deferred):
            value = self.__dict__[key] = value()
        return value

    def put(self: Slice, value: Any) -> None:
        self.__dict__[key] = value

    return property(get, put, doc=f"``{name}``, made on first access when given as :class:`Deferred`.")


# After the dataclass is made, so its __init__, repr and comparisons go through the properties.
Slice.hu = _deferrable("hu")  # type: ignore[method-assign,assignment]
Slice.lung_hu = _deferrable("lung_hu")  # type: ignore[method-assign,assignment]


@dataclass
class Dataset:
    """A train/test split plus a pool of healthy slices (canvases for synthesis).

    The test split is for evaluation only: strategies receive ``train`` and ``healthy``, never ``test``.
    Data simulated at two scanner sites (lidc-phantom, physics "ct") also carry ``shifted``, the test
    slices acquired at a held-out site (paired with ``test`` slice by slice), and ``train_shifted``,
    the training slices acquired there (for the data-oracle control only); strategies see neither.
    """

    name: str
    train: list[Slice]
    test: list[Slice]
    healthy: list[Slice] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    shifted: list[Slice] = field(default_factory=list)
    train_shifted: list[Slice] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint_slices(
                self.train + self.test + self.healthy + self.shifted + self.train_shifted
            )


def fingerprint_slices(slices: list[Slice]) -> str:
    """A content hash of the slices (ids, labels, arrays): the same data give the same string."""
    h = hashlib.sha256()
    for s in slices:
        h.update(s.id.encode())
        h.update(s.label.encode())
        h.update(np.ascontiguousarray(s.hu).tobytes())
        h.update(np.ascontiguousarray(s.mask).tobytes())
        if s.readers is not None:  # multi-reader data: every reader's mask and the consensus rule
            h.update(np.ascontiguousarray(s.readers).tobytes())
            h.update(str(s.provenance.get("consensus", "")).encode())
    return h.hexdigest()[:16]
