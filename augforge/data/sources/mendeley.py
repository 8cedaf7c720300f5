"""The seed paper's dataset (Mendeley Data, doi:10.17632/5rr22hgzwr.1), from its pandas pickles.

A folder holding ``lung_cancer_train.pkl`` (708 rows) and ``lung_cancer_test.pkl`` (264 rows), each
a DataFrame with columns ``label1`` (Lung-RADS class), ``mask`` (512x512 int8 {0, 1}),
``hu_array_old`` (the slice in HU) and ``hu_array`` (the same slice with the non-lung area removed
by the authors' thresholding: the paper's network input, kept verbatim as ``lung_hu``).

Unpickling can run arbitrary code, so it happens only with ``allow_pickle=True``
(``--allow-pickle``), once: the content is converted to the cache's plain arrays and JSON, and
later runs read those (a changed pickle, by size or mtime, is converted again and needs the flag).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from augforge.data.processing import validate
from augforge.data.processing.cache import SliceStack
from augforge.errors import DataError
from augforge.progress import track

FILES = {"train": "lung_cancer_train.pkl", "test": "lung_cancer_test.pkl"}
COLUMNS = ("label1", "mask", "hu_array_old", "hu_array")
#: The dataset does not record pixel spacing; a 512-pixel chest slice is about 0.7 mm.
ASSUMED_SPACING_MM = 0.7


def is_mendeley(path: Path) -> bool:
    """``path`` is one of the two pickles, or a folder holding at least one of them."""
    if path.is_file():
        return path.name in FILES.values()
    return path.is_dir() and any((path / f).is_file() for f in FILES.values())


def folder_of(path: Path) -> Path:
    return path.parent if path.is_file() else path


def read_frame(file: Path) -> Any:
    """Unpickle one DataFrame (the caller has the user's consent) and check its columns."""
    try:
        import pandas as pd
    except ImportError:
        raise DataError(f"{file}: reading the Mendeley pickles needs pandas; pip install 'augforge[pandas]'") from None
    try:
        frame = pd.read_pickle(file)
    except Exception as exc:  # noqa: BLE001 - unpickling fails in many ways; all mean "corrupt"
        raise DataError(f"{file}: not a readable pandas pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{file}: holds a {type(frame).__name__}, not a pandas DataFrame")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{file}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)} (the paper's layout)"
        )
    return frame


def build(path: Path, *, allow_pickle: bool = False, progress: bool = True) -> SliceStack:
    """Convert the two pickles to a :class:`SliceStack` (train and test as the files say)."""
    folder = folder_of(path)
    files = {split: folder / name for split, name in FILES.items()}
    for file in files.values():
        if not file.is_file():
            raise DataError(f"{file}: not found; the Mendeley dataset is {' and '.join(FILES.values())} in one folder")
    if not allow_pickle:
        raise DataError(
            f"{files['train']}: the Mendeley dataset is pickled, and unpickling can run "
            "arbitrary code; pass --allow-pickle if you trust these files "
            "(they are converted once to plain arrays)"
        )
    rows: list[tuple[str, int, Any]] = []
    for split, file in files.items():
        frame = read_frame(file)
        rows += [
            (split, i, r)
            for i, r in enumerate(
                frame[list(COLUMNS) + (["patient"] if "patient" in frame.columns else [])].itertuples(index=False)
            )
        ]
    hu, lung, masks, records, shapes = [], [], [], [], {}
    for split, i, row in track(rows, "converting the Mendeley pickles", progress):
        where = f"{files[split]} row {i}"
        full = validate.hu_slice(row.hu_array_old, f"{where} hu_array_old")
        lung_only = validate.hu_slice(row.hu_array, f"{where} hu_array")
        if lung_only.shape != full.shape:
            raise DataError(f"{where}: hu_array {lung_only.shape} and hu_array_old {full.shape} differ in shape")
        m = validate.mask_slice(row.mask, full.shape, f"{where} mask")
        shapes[where] = full.shape
        sid = f"{split}-{i:04d}"
        hu.append(full)
        lung.append(lung_only)
        masks.append(m)
        records.append(
            {
                "id": sid,
                "label": validate.label(row.label1, f"{where} label1"),
                "split": split,
                # Rows carry no patient id: each is its own group (the authors' split is kept as is).
                "patient": str(getattr(row, "patient", f"mendeley-{sid}")),
                "source": "mendeley",
                "spacing_mm": ASSUMED_SPACING_MM,
                "provenance": {"file": files[split].name, "row": i, "spacing_assumed": True},
            }
        )
    validate.same_shape(shapes, str(folder))
    mask_stack = np.stack(masks) if masks else np.zeros((0, 8, 8), np.uint8)
    validate.dataset(records, mask_stack, str(folder))
    hu_stack, lung_stack = np.stack(hu), np.stack(lung)
    # The authors' non-lung value is whatever fills their hu_array outside the lungs: the corner.
    field = lung_stack != lung_stack[:, :1, :1]
    meta = {"name": "mendeley", "source": str(folder), "spacing_mm": ASSUMED_SPACING_MM}
    return SliceStack(hu=hu_stack, field=field, mask=mask_stack, records=records, meta=meta, lung_hu=lung_stack)
