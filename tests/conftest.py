"""Shared test set-up: an isolated cache, and registering plugins in-process without installing them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from augforge.plugins import pm


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test session gets its own cache folder, built once and shared by the tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AUGFORGE_CACHE", str(tmp_path_factory.mktemp("augforge-cache")))
    yield
    mp.undo()


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[object]:
    """Register ``plugin`` (an object with ``@hookimpl`` methods) for the duration of the block."""
    pm.register(plugin, name=name)
    try:
        yield plugin
    finally:
        pm.unregister(name=name)


@pytest.fixture
def register_plugin():
    """``with register_plugin(obj, "name"):`` registers an in-process plugin for one block."""
    return registered


def write_lidc_export(root, n_patients: int = 8, size: int = 64, seed: int = 0, readers: int = 4):
    """A small export in the LIDC per-slice layout (PATIENT/nodule-K/images/slice-N.png, mask-R/):
    8-bit crops with a bright nodule near the centre, each reader's outline a slightly different disk,
    and on each nodule's first slice only one reader marking it (no consensus there)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    for p in range(n_patients):
        for k in range(1 + p % 2):
            nod = root / f"LIDC-IDRI-{p + 1:04d}" / f"nodule-{k}"
            for sub in ["images", *(f"mask-{r}" for r in range(readers))]:
                (nod / sub).mkdir(parents=True)
            radius = 3 + (p * 3 + k) % 9
            cy, cx = size // 2 + int(rng.integers(-2, 3)), size // 2 + int(rng.integers(-2, 3))
            for n in range(3 + k):
                img = rng.normal(60, 12, (size, size))
                cv2.circle(img, (cx, cy), radius, 200, -1)
                cv2.imwrite(str(nod / "images" / f"slice-{n}.png"), np.clip(img, 0, 255).astype(np.uint8))
                for r in range(readers):
                    m = np.zeros((size, size), np.uint8)
                    if n > 0 or r == 0:
                        cv2.circle(m, (cx, cy), max(1, radius - 1 + r % 3), 255, -1)
                    cv2.imwrite(str(nod / f"mask-{r}" / f"slice-{n}.png"), m)
    return root


@pytest.fixture
def lidc_export(tmp_path):
    """A factory: ``lidc_export(name, **kw)`` writes a small per-slice export under tmp_path."""
    return lambda name="export", **kw: write_lidc_export(tmp_path / name, **kw)


def write_ct_dicom(path, hu, *, patient: str, series_uid: str, z_mm: float, spacing_mm: float, sop_uid: str):
    """One 512x512 CT slice as a DICOM file (HU stored as value + 1024, rescale intercept -1024)."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.PatientID, ds.SeriesInstanceUID = "CT", patient, series_uid
    ds.SOPInstanceUID = sop_uid
    ds.ImagePositionPatient = [0.0, 0.0, z_mm]
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.Rows, ds.Columns = np.shape(hu)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = (np.asarray(hu) + 1024).clip(0, 4095).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def solid_lidc_nodules(n: int = 2):
    """The first ``n`` first-reader annotations of solid 8-20 mm nodules, one per patient: real LIDC
    geometry for synthetic DICOM series."""
    from augforge.data.sources import lidc

    picks, seen = [], set()
    for nod in lidc.read_nodules():
        if nod.reader_rank == 0 and nod.texture == 5 and 8 < nod.mean_diameter_mm < 20 and nod.patient_id not in seen:
            picks.append(nod)
            seen.add(nod.patient_id)
        if len(picks) == n:
            break
    return picks


def commit_fake_trial(
    store, name: str, seed: int, values, *, config: dict | None = None, shifted_values=None, **record_fields
) -> None:
    """Commit a finished trial ``NAME-SEED`` of strategy ``name`` to ``store`` whose per-image Dice are
    ``values`` (hand-made results for ranking and report tests: image i has class LR2..LR4B in turn);
    ``shifted_values``: the same images' Dice at a held-out scanner site (ids ``imgNNN@held-out-site``);
    ``record_fields`` go into the trial record as they are."""
    import numpy as np

    labels = ("LR2", "LR3", "LR4A", "LR4B")
    key = f"{name}-{seed}"
    rows = [
        {
            "trial": key,
            "strategy": name,
            "seed": seed,
            "train_fraction": 1.0,
            "image": f"img{i:03d}",
            "class": labels[i % 4],
            "spacing_mm": 1.0,
            "dice": float(v),
            "iou": float(v) / 2,
            "precision": 0.9,
            "recall": float(v),
            "hd95_mm": 3.0,
            "true_px": 10,
            "pred_px": 9,
        }
        for i, v in enumerate(values)
    ]
    record = {
        "key": key,
        "status": "ok",
        "strategy": name,
        "seed": seed,
        "train_fraction": 1.0,
        "preset": "tiny",
        "config": config or {},
        "dataset": {"name": "fake", "fingerprint": "f" * 16},
        "metrics": {"dice": float(np.mean(values))},
        "timings_s": {"total": 1.0},
        "memory": {"peak_rss_mb": 100.0},
        "training": {"n_total": 10, "data_wait_share": 0.01},
        **record_fields,
    }
    shifted = [
        {**row, "image": f"{row['image']}@held-out-site", "dice": float(v), "recall": float(v), "iou": float(v) / 2}
        for row, v in zip(rows, shifted_values if shifted_values is not None else [])
    ]
    store.commit(record, rows, shifted)
