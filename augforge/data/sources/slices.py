"""The LIDC-IDRI per-slice export: 2-D crops around each nodule with every reader's mask::

    DATASET/
        <patient>/                  one folder per patient (e.g. LIDC-IDRI-0001)
            nodule-<k>/             one folder per nodule
                images/slice-<n>.png      8-bit crop, the nodule near its centre
                mask-0/slice-<n>.png      reader 1's outline on that slice (0/255); mask-1 .. mask-3 alike

What is kept and how (docs/data.md, "The LIDC-IDRI per-slice export"):

- Every reader's mask is kept (``Slice.readers``); the label is their *consensus*: the pixels that
  at least ``data.consensus`` readers marked (default 2 of 4, the usual rule). Slices where no pixel
  reaches the consensus (one reader alone marked the nodule there) are left out and counted.
- Intensities are 8-bit (each crop min-max scaled on its own by the export): no Hounsfield units.
  The dataset says so (``meta["intensity"] = "8-bit"``) and every stage that needs HU refuses it
  with a one-line reason (the lung-only input, HU windows, paste-in synthesis).
- No pixel spacing is given: ``ASSUMED_SPACING_MM`` is assumed (``provenance.spacing_assumed``).
  A nodule's Lung-RADS size class comes from its largest consensus outline at that spacing, as a
  solid nodule (the export has no texture rating); all its slices carry that class.
- The nodule sits at the centre of every crop, so a predictor that draws a disk at the centre
  scores well without looking. Every slice is therefore cut to ``side - 2 * data.offset_px`` pixels
  at an offset of up to ``data.offset_px`` in each direction, drawn from a hash of the slice's id
  (never from its mask): the nodule lands anywhere within that range, the same way on every run.
- Split by patient (``augforge.data.processing.split``), never by slice.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from augforge.data.processing import lungrads, validate
from augforge.data.processing import split as splitting
from augforge.data.processing.cache import SliceStack
from augforge.data.sources.folder import mean_diameter_mm
from augforge.errors import DataError
from augforge.progress import track

KIND = "lidc-slices"
#: LIDC in-plane spacing is typically 0.5-0.9 mm; the export does not record it.
ASSUMED_SPACING_MM = 0.7
INTENSITY = "8-bit"
_NODULE = re.compile(r"nodule-(\d+)")
_SLICE = re.compile(r"slice-(\d+)\.png")
_MASK = re.compile(r"mask-(\d+)")


def is_slices_export(path: Path) -> bool:
    """``path`` holds ``<patient>/nodule-<k>/images/``."""
    return path.is_dir() and next(path.glob("*/nodule-*/images"), None) is not None


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _numbered(folder: Path, pattern: re.Pattern[str], what: str) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in _visible(folder):
        m = pattern.fullmatch(p.name)
        if m is None:
            raise DataError(
                f"{p}: unexpected {'folder' if p.is_dir() else 'file'} in {folder}; "
                f"expected only {what} (move it out of the dataset)"
            )
        out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def _read_png(path: Path, what: str) -> np.ndarray:
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise DataError(f"{path}: not a readable PNG")
    if a.ndim != 2:
        raise DataError(
            f"{path}: {a.ndim}-D PNG with {a.shape[-1]} channels; the export's {what} are single-channel grayscale"
        )
    if a.dtype != np.uint8:
        raise DataError(f"{path}: {a.dtype} PNG; the export's {what} are 8-bit")
    return a


def offset(slice_id: str, max_offset: int) -> tuple[int, int]:
    """(rows, cols) shift in [-max_offset, max_offset] from a hash of the slice id alone."""
    if max_offset <= 0:
        return 0, 0
    digest = hashlib.sha256(slice_id.encode()).digest()
    span = 2 * max_offset + 1
    return (
        int.from_bytes(digest[:4], "little") % span - max_offset,
        int.from_bytes(digest[4:8], "little") % span - max_offset,
    )


def _cut(a: np.ndarray, shift: tuple[int, int], margin: int) -> np.ndarray:
    """The window of side ``size - 2 * margin`` whose centre is moved by ``shift`` from the crop's:
    the nodule, at the crop's centre, moves by ``-shift`` in the window."""
    h, w = a.shape[-2:]
    r0, c0 = margin + shift[0], margin + shift[1]
    return a[..., r0 : h - 2 * margin + r0, c0 : w - 2 * margin + c0]


def build(path: Path, *, consensus: int = 2, offset_px: int = 16, progress: bool = True) -> SliceStack:
    """Read the export under ``path`` into a :class:`SliceStack` (see the module docstring)."""
    patients = [p for p in _visible(path) if p.is_dir()]
    stray = [p for p in _visible(path) if not p.is_dir() and p.name not in ("README.md", "LICENSE", "README")]
    if stray:
        raise DataError(f"{stray[0]}: unexpected file at the top of the export; expected one folder per patient")
    if not patients:
        raise DataError(f"{path}: no patient folders")
    images, readers, records, shapes = [], [], [], {}
    n_readers = None
    for patient in track(patients, f"reading {path.name}", progress):
        nodules = _numbered(patient, _NODULE, "nodule-<k> folders")
        if not nodules:
            raise DataError(f"{patient}: empty patient folder; expected nodule-<k> folders")
        for k, nod in nodules.items():
            entries = {p.name: p for p in _visible(nod)}
            if "images" not in entries:
                raise DataError(f"{nod}: no images/ folder")
            masks = {int(m.group(1)): p for name, p in entries.items() if (m := _MASK.fullmatch(name))}
            other = sorted(set(entries) - {"images"} - {p.name for p in masks.values()})
            if other:
                raise DataError(f"{entries[other[0]]}: unexpected entry in {nod}; expected images/ and mask-<r>/")
            if not masks:
                raise DataError(f"{nod}: no mask-<r>/ folder beside images/")
            if n_readers is None:
                n_readers = len(masks)
            if sorted(masks) != list(range(n_readers)):
                raise DataError(
                    f"{nod}: reader folders {', '.join(p.name for p in masks.values())}; "
                    f"expected mask-0 .. mask-{n_readers - 1} as in the rest of the export"
                )
            slice_files = _numbered(entries["images"], _SLICE, "slice-<n>.png files")
            if not slice_files:
                raise DataError(f"{entries['images']}: no slice-<n>.png files")
            for mdir in masks.values():
                have = _numbered(mdir, _SLICE, "slice-<n>.png files")
                missing = sorted(set(slice_files) - set(have))
                if missing:
                    raise DataError(
                        f"{mdir}: {len(have)} slices for {len(slice_files)} images; slice-{missing[0]}.png is missing"
                    )
                extra = sorted(set(have) - set(slice_files))
                if extra:
                    raise DataError(f"{have[extra[0]]}: a mask without an image in {entries['images']}")
            for n, file in slice_files.items():
                img = _read_png(file, "images")
                rm = []
                for mdir in masks.values():
                    mfile = mdir / file.name
                    m = _read_png(mfile, "masks")
                    if m.shape != img.shape:
                        raise DataError(f"{mfile}: mask {m.shape} does not match its image {img.shape}")
                    rm.append(validate.mask_slice(m, img.shape, str(mfile)))
                shapes[str(file)] = img.shape
                images.append(img)
                readers.append(np.stack(rm))
                records.append(
                    {
                        "id": f"{patient.name}/n{k}/s{n}",
                        "patient": patient.name,
                        "nodule": k,
                        "file": str(file.relative_to(path)),
                    }
                )
    if n_readers is None or not images:
        raise DataError(f"{path}: no slices found")
    if not 1 <= consensus <= n_readers:
        raise DataError(
            f"{path}: data.consensus={consensus}, but the export has {n_readers} readers; choose 1 to {n_readers}"
        )
    shape = validate.same_shape(shapes, str(path))
    if min(shape) - 2 * offset_px < 16:
        raise DataError(
            f"{path}: data.offset_px={offset_px} leaves less than 16 pixels of a {shape[0]}x{shape[1]} crop; lower it"
        )
    reader_stack = np.stack(readers).astype(np.uint8)  # (N, R, H, W)
    label_stack = (reader_stack.sum(axis=1) >= consensus).astype(np.uint8)
    # A nodule's size class: its largest consensus outline, at the assumed spacing, as a solid nodule.
    diameters: dict[tuple[str, int], float] = {}
    for rec, m in zip(records, label_stack):
        if m.any():
            key = (rec["patient"], rec["nodule"])
            diameters[key] = max(diameters.get(key, 0.0), mean_diameter_mm(m, ASSUMED_SPACING_MM))
    keep = [i for i, m in enumerate(label_stack) if m.any()]
    test = splitting.test_patients(r["patient"] for r in records)
    out_records = []
    for i in keep:
        rec = records[i]
        d = diameters[(rec["patient"], rec["nodule"])]
        shift = offset(rec["id"], offset_px)
        out_records.append(
            {
                "id": rec["id"],
                "label": lungrads.classify(d, 5),
                "patient": rec["patient"],
                "split": "test" if rec["patient"] in test else "train",
                "source": KIND,
                "spacing_mm": ASSUMED_SPACING_MM,
                "provenance": {
                    "file": rec["file"],
                    "nodule": f"{rec['patient']}/nodule-{rec['nodule']}",
                    "nodule_diameter_mm": round(d, 2),
                    "spacing_assumed": True,
                    "readers_marking": int(sum(bool(r.any()) for r in reader_stack[i])),
                    "consensus": f">= {consensus} of {n_readers}",
                    "offset_px": list(shift),
                },
            }
        )
    cut = [_cut(images[i], offset(records[i]["id"], offset_px), offset_px) for i in keep]
    cut_readers = [_cut(reader_stack[i], offset(records[i]["id"], offset_px), offset_px) for i in keep]
    mask_list = [(r.sum(axis=0) >= consensus).astype(np.uint8) for r in cut_readers]
    # A large nodule moved far enough can leave the window on a slice where it is small: drop those too.
    inside = [j for j, m in enumerate(mask_list) if m.any()]
    out_records = [out_records[j] for j in inside]
    hu = np.stack([cut[j] for j in inside]).astype(np.float32)
    readers_out = np.stack([cut_readers[j] for j in inside]).astype(np.uint8)
    mask = np.stack([mask_list[j] for j in inside])
    validate.dataset(out_records, mask, str(path))
    meta: dict[str, Any] = {
        "name": path.name or KIND,
        "source": str(path),
        "intensity": INTENSITY,
        "readers": n_readers,
        "consensus": consensus,
        "offset_px": offset_px,
        "spacing_mm": ASSUMED_SPACING_MM,
        "slices_read": len(records),
        "dropped_no_consensus": len(records) - len(keep),
        "dropped_outside_window": len(keep) - len(inside),
        "nodules": len({(r["patient"], r["nodule"]) for r in records}),
        "patients": len(patients),
    }
    return SliceStack(
        hu=hu, field=np.zeros(hu.shape, bool), mask=mask, records=out_records, meta=meta, readers=readers_out
    )
