"""A generic folder of image/mask pairs::

    DATASET/
        images/   <id>.npy | <id>.npz | <id>.png | <id>.nii | <id>.nii.gz    (HU)
        masks/    <id>.<any of those>                                         ({0, 1}, same shape)
        labels.csv                                                            (optional)

Images are HU: ``.npy`` / ``.npz`` arrays (an ``.npz`` holds one array, or ``hu`` / ``image``),
16-bit PNG with value = HU + 1024 (8-bit PNG holds no HU and is refused), NIfTI (``pip install
'augforge[nifti]'``). A 3-D array is a stack of slices (NIfTI: along the last axis; NumPy: along
the first); each slice becomes a record ``<id>:<k>`` of patient ``<id>``.

``labels.csv`` has a header with ``id`` and any of ``label`` (Lung-RADS class), ``split``
(train / test / healthy), ``patient``, ``spacing_mm``; ``id`` is the file name without extension
(``<id>:<k>`` for one slice of a stack). Without a label, a slice without tumour is LR1 and one
with a tumour is classed from the mask's mean diameter as a solid nodule. Without a split,
slices without tumour go to the healthy pool and the others to train/test by patient.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from augforge.data.processing import lungrads, validate
from augforge.data.processing import split as splitting
from augforge.data.processing.cache import SliceStack
from augforge.data.sources.lidc import axes_px
from augforge.errors import DataError
from augforge.progress import track

EXTENSIONS = (".npy", ".npz", ".png", ".nii", ".nii.gz")
#: Pixel spacing when neither the file (NIfTI) nor labels.csv gives one.
DEFAULT_SPACING_MM = 0.7
PNG_HU_OFFSET = 1024


def _stem(p: Path) -> str:
    name = p.name
    for ext in EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return p.stem


def _files(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower().endswith(EXTENSIONS) and not p.name.startswith("."):
            stem = _stem(p)
            if stem in out:
                raise DataError(f"{p}: two files for id {stem!r} ({out[stem].name}, {p.name})")
            out[stem] = p
    return out


def read_array(path: Path) -> tuple[np.ndarray, float | None, str]:
    """(array, pixel spacing in mm or None, stack axis "first" | "last") of one image or mask file."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _read_nifti(path)
    try:
        if name.endswith(".npy"):
            return np.load(path, allow_pickle=False), None, "first"
        if name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                named = [k for k in ("hu", "image", "mask") if k in z.files]
                if not named and len(z.files) != 1:
                    raise DataError(f"{path}: holds {len(z.files)} arrays; name the slice 'hu' or 'image'")
                return z[(named or z.files)[0]], None, "first"
        import cv2

        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if a is None:
            raise DataError(f"{path}: not a readable PNG")
        return a, None, "first"
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None


def _read_nifti(path: Path) -> tuple[np.ndarray, float | None, str]:
    try:
        import nibabel
    except ImportError:
        raise DataError(f"{path}: reading NIfTI needs nibabel; pip install 'augforge[nifti]'") from None
    try:
        img = nibabel.load(str(path))
        a = np.asanyarray(img.dataobj)
        zooms = img.header.get_zooms()
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a bad file
        raise DataError(f"{path}: unreadable NIfTI ({exc})") from None
    return a, float(zooms[0]) if zooms else None, "last"


def _slices(a: np.ndarray, axis: str) -> list[np.ndarray]:
    a = np.squeeze(a)
    if a.ndim == 2:
        return [a]
    if a.ndim == 3:
        return [a[k] for k in range(a.shape[0])] if axis == "first" else [a[..., k] for k in range(a.shape[-1])]
    return [a]  # validate.hu_slice names the wrong rank


def _read_labels(path: Path) -> dict[str, dict[str, str]]:
    """Rows of labels.csv by id; each row also holds its line number as ``_line``."""
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "id" not in reader.fieldnames:
                raise DataError(
                    f"{path}: needs a header with an 'id' column (and any of label, split, patient, spacing_mm)"
                )
            out: dict[str, dict[str, str]] = {}
            for row in reader:
                sid = (row["id"] or "").strip()
                line = str(reader.line_num)
                if not sid:
                    raise DataError(f"{path}:{line}: empty id")
                if sid in out:
                    raise DataError(f"{path}:{line}: id {sid!r} again (first on line {out[sid]['_line']})")
                out[sid] = {k: (v or "").strip() for k, v in row.items() if k} | {"_line": line}
            return out
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable CSV ({exc})") from None


def _spacing(value: Any, where: str) -> float:
    """A pixel spacing in mm: a finite number above 0, else a DataError naming ``where``."""
    try:
        sp = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: spacing_mm {value!r} is not a number") from None
    if not np.isfinite(sp) or sp <= 0:
        raise DataError(f"{where}: spacing_mm {value!r} must be a positive number of millimetres")
    return sp


def mean_diameter_mm(mask: np.ndarray, spacing_mm: float) -> float:
    """Lung-RADS mean diameter (mm) of a 2-D mask: mean of the long axis and the extent across it,
    measured on pixel centres plus one pixel (a 1-pixel nodule is one pixel wide)."""
    rows, cols = np.nonzero(mask)
    long_px, short_px = axes_px(np.stack([cols, rows], axis=1).astype(np.float64))
    return 0.5 * (long_px + short_px + 2.0) * spacing_mm


def build(path: Path, *, progress: bool = True) -> SliceStack:
    """Read the folder into a :class:`SliceStack`; every problem is a DataError naming the file."""
    img_dir, mask_dir = path / "images", path / "masks"
    images = _files(img_dir)
    if not images:
        raise DataError(f"{img_dir}: no images ({', '.join(EXTENSIONS)})")
    masks = _files(mask_dir) if mask_dir.is_dir() else {}
    stray = sorted(set(masks) - set(images))
    if stray:
        raise DataError(
            f"{masks[stray[0]]}: a mask without an image in {img_dir}"
            + (f" (and {len(stray) - 1} more)" if len(stray) > 1 else "")
        )
    labels_path = path / "labels.csv"
    labels = _read_labels(labels_path) if labels_path.is_file() else {}
    used: set[str] = set()
    hu, mask_list, records, shapes = [], [], [], {}
    for stem, file in track(list(images.items()), f"reading {img_dir}", progress):
        arr, spacing, axis = read_array(file)
        parts = _slices(arr, axis)
        mparts: list[np.ndarray | None] = [None] * len(parts)
        if stem in masks:
            marr, _, maxis = read_array(masks[stem])
            mparts = _slices(marr, maxis)
            if len(mparts) != len(parts):
                raise DataError(f"{masks[stem]}: {len(mparts)} mask slices for {len(parts)} image slices")
        for k, (img, m) in enumerate(zip(parts, mparts)):
            sid = stem if len(parts) == 1 else f"{stem}:{k}"
            where = f"{file}" if len(parts) == 1 else f"{file} slice {k}"
            if file.name.lower().endswith(".png"):
                if img.dtype != np.uint16:
                    raise DataError(
                        f"{file}: {img.dtype} PNG holds no HU; save 16-bit PNG with value = HU + {PNG_HU_OFFSET}"
                    )
                img = img.astype(np.float32) - PNG_HU_OFFSET
            s_hu = validate.hu_slice(img, where)
            row = labels.get(sid, labels.get(stem, {}))
            used.add(sid if sid in labels else stem)
            line = f"{labels_path}:{row['_line']}" if row else str(labels_path)
            if m is None:
                # A missing mask file must not quietly turn a tumour slice into a healthy canvas:
                # only a slice labels.csv calls healthy may go without one.
                if row.get("label") not in ("LR1", "1") and row.get("split", "").lower() != "healthy":
                    raise DataError(
                        f"{where}: no mask in {mask_dir}; give every image a mask (all zeros for "
                        "a healthy slice), or mark it label LR1 or split healthy in labels.csv"
                    )
                s_mask = np.zeros(s_hu.shape, np.uint8)
            else:
                s_mask = validate.mask_slice(
                    m, s_hu.shape, f"{masks[stem]}" + ("" if len(parts) == 1 else f" slice {k}")
                )
            if row.get("spacing_mm"):
                sp = _spacing(row["spacing_mm"], f"{line} (id {sid})")
            elif spacing is not None:
                sp = _spacing(spacing, f"{file} (its header)")
            else:
                sp = DEFAULT_SPACING_MM
            prov: dict[str, Any] = {"file": str(file.relative_to(path))}
            if row.get("label"):
                label = validate.label(row["label"], f"{line} id {sid}")
            elif s_mask.any():
                d = mean_diameter_mm(s_mask, sp)
                label = lungrads.classify(d, 5)
                prov |= {"label_from": "mask mean diameter, as a solid nodule", "diameter_mm": round(d, 2)}
            else:
                label = "LR1"
            if label == "LR1" and s_mask.any():
                raise DataError(f"{where}: labelled LR1 (healthy) but its mask has a tumour")
            split = row.get("split", "").lower()
            if split and split not in ("train", "test", "healthy"):
                raise DataError(f"{line}: split {split!r} of {sid} is not train, test or healthy")
            shapes[where] = s_hu.shape
            hu.append(s_hu)
            mask_list.append(s_mask)
            records.append(
                {
                    "id": sid,
                    "label": label,
                    "split": split,
                    "patient": row.get("patient") or stem,
                    "source": "folder",
                    "spacing_mm": sp,
                    "provenance": prov,
                }
            )
    unmatched = sorted((k for k in set(labels) - used), key=lambda k: int(labels[k]["_line"]))
    if unmatched:
        first = unmatched[0]
        raise DataError(
            f"{labels_path}:{labels[first]['_line']}: id {first!r} matches no file in {img_dir}"
            + (f" (and {len(unmatched) - 1} more ids)" if len(unmatched) > 1 else "")
            + "; fix the id or remove the row"
        )
    validate.same_shape(shapes, str(img_dir))
    _assign_splits(records)
    keep = [i for i, r in enumerate(records) if r["split"] != "drop"]
    records = [records[i] for i in keep]
    mask_stack = np.stack([mask_list[i] for i in keep]) if keep else np.zeros((0, 8, 8), np.uint8)
    validate.dataset(records, mask_stack, str(path))
    hu_stack = np.stack([hu[i] for i in keep])
    meta = {
        "name": path.name or "folder",
        "source": str(path),
        "dropped_healthy_of_test_patients": len(shapes) - len(keep),
    }
    return SliceStack(hu=hu_stack, field=None, mask=mask_stack, records=records, meta=meta)


def _assign_splits(records: list[dict[str, Any]]) -> None:
    """Fill in missing splits: tumour slices by patient (see split.py), healthy slices to the
    healthy pool -- unless their patient is in test: a canvas must not carry test anatomy into
    training, so those are marked "drop"."""
    fixed = {r["patient"]: r["split"] for r in records if r["split"] in ("train", "test")}
    test = splitting.test_patients(
        r["patient"] for r in records if not r["split"] and r["label"] != "LR1" and r["patient"] not in fixed
    )
    for r in records:
        if r["split"]:
            continue
        side = fixed.get(r["patient"]) or ("test" if r["patient"] in test else "train")
        if r["label"] != "LR1":
            r["split"] = side
        else:
            r["split"] = "drop" if side == "test" else "healthy"
