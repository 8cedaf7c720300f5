"""The LIDC-IDRI per-slice export as a data source: layout, consensus, readers, offsets, bad input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from augforge.bench.floors import floor_rows, reader_agreement
from augforge.cli import main
from augforge.config import DataConfig
from augforge.data.processing.cache import cache_root
from augforge.data.sources import detect, load_dataset
from augforge.errors import DataError, UsageError


def load(path, **kw):
    return load_dataset(DataConfig(source=str(path), **kw), progress=False)


def test_the_layout_is_recognised_and_read(lidc_export):
    root = lidc_export()
    assert detect(root) == "lidc-slices"
    ds = load(root, offset_px=8)
    assert ds.meta["intensity"] == "8-bit" and ds.meta["readers"] == 4 and ds.meta["consensus"] == 2
    # Each nodule's first slice has one reader only: no consensus, left out and counted.
    assert ds.meta["slices_read"] == 40 and ds.meta["dropped_no_consensus"] == 12
    assert len(ds.train) + len(ds.test) == 28 and not ds.healthy
    assert not {s.patient for s in ds.train} & {s.patient for s in ds.test}  # split by patient
    for s in ds.train + ds.test:
        assert s.hu.shape == (48, 48) and s.readers.shape == (4, 48, 48)  # 64 - 2 x 8
        assert np.array_equal(s.mask, (s.readers.sum(axis=0) >= 2).astype(np.uint8))
        assert s.provenance["spacing_assumed"] and s.spacing_mm == 0.7
        assert s.provenance["consensus"] == ">= 2 of 4" and s.label in ("LR2", "LR3", "LR4A", "LR4B")
        assert not s.lung_field.any()  # no Hounsfield units, no thresholded lung field
    # A nodule's slices share its size class.
    by_nodule = {}
    for s in ds.train + ds.test:
        by_nodule.setdefault(s.provenance["nodule"], set()).add(s.label)
    assert all(len(v) == 1 for v in by_nodule.values())


def test_the_consensus_rule_is_a_setting_in_the_fingerprint(lidc_export):
    root = lidc_export()
    two, three = load(root), load(root, consensus=3)
    assert two.fingerprint != three.fingerprint and three.meta["consensus"] == 3
    a = {s.id: s for s in two.train + two.test}
    for s in three.train + three.test:
        assert s.mask.sum() <= a[s.id].mask.sum()
    with pytest.raises(DataError, match="data.consensus=5, but the export has 4 readers"):
        load(root, consensus=5)


def test_crops_are_moved_off_centre_by_the_id_alone(lidc_export):
    root = lidc_export()
    centred, moved = load(root, offset_px=0), load(root, offset_px=12)
    shifts = [tuple(s.provenance["offset_px"]) for s in moved.train + moved.test]
    assert len(set(shifts)) > 5 and all(abs(r) <= 12 and abs(c) <= 12 for r, c in shifts)
    area = np.median([s.mask.sum() for s in centred.train])
    disk = {}
    for ds in (centred, moved):
        rows = floor_rows(ds)
        disk[ds is moved] = np.mean([r["dice"] for r in rows if r["floor"] == "centre-disk"])
    assert area > 0 and disk[True] < disk[False]  # guessing the centre pays less once crops move


def test_the_readers_ceiling():
    a = np.zeros((4, 10, 10), np.uint8)
    a[:, 2:6, 2:6] = 1
    assert np.allclose(reader_agreement(a, 2), 1.0)  # four identical readers agree perfectly
    a[3] = 0
    a[3, 7:9, 7:9] = 1  # one reader marks something else
    agree = reader_agreement(a, 2)
    assert np.allclose(agree[:3], 1.0) and agree[3] == 0.0


def test_floors_and_ceiling_are_stored_for_multi_reader_data(lidc_export):
    ds = load(lidc_export())
    rows = floor_rows(ds)
    assert {r["floor"] for r in rows} == {"empty", "centre-disk", "threshold-blob", "readers"}
    ceiling = [r["dice"] for r in rows if r["floor"] == "readers"]
    assert len(ceiling) == len(ds.test) and 0.3 < np.mean(ceiling) < 1.0


def test_hu_only_settings_and_strategies_are_refused(lidc_export, tmp_path, capsys):
    root = lidc_export()
    with pytest.raises(UsageError, match="data.input=lung needs Hounsfield units"):
        load(root, input="lung")
    with pytest.raises(UsageError, match="data.window='lung' is a window in Hounsfield units"):
        load(root, window="lung")
    rc = main(
        [
            "bench",
            "--data",
            str(root),
            "--strategy",
            "dcgan-paper",
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "dcgan-paper: needs Hounsfield units, and " in err and "8-bit intensities" in err
    assert not (tmp_path / "run" / "trials.jsonl").exists()


def test_data_info_json_reports_the_export(lidc_export, capsys):
    root = lidc_export()
    assert main(["data", "info", str(root), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["intensity"] == "8-bit" and facts["readers"] == 4
    assert "at least 2 of the 4 readers" in facts["consensus"]
    assert facts["patients"]["train"] + facts["patients"]["test"] == 8
    assert facts["nodules"]["train"] + facts["nodules"]["test"] == 12
    assert sum(facts["classes"]["test"].values()) == facts["slices"]["test"]


def test_a_baseline_trains_on_the_export(lidc_export, tmp_path):
    root = lidc_export(n_patients=10)
    out = tmp_path / "run"
    assert (
        main(
            [
                "bench",
                "--data",
                str(root),
                "--strategy",
                "flip",
                "--preset",
                "tiny",
                "--set",
                "data.offset_px=8",
                "--out",
                str(out),
                "--no-progress",
                "--no-samples",
            ]
        )
        == 0
    )
    board = (out / "leaderboard.csv").read_text()
    assert "ceiling,ceiling:readers" in board and "floor,floor:centre-disk" in board


def _break(root, how):
    nod = root / "LIDC-IDRI-0002" / "nodule-0"
    if how == "no images":
        for f in (nod / "images").iterdir():
            f.unlink()
        (nod / "images").rmdir()
        return nod, "no images/ folder"
    if how == "fewer masks":
        (nod / "mask-2" / "slice-1.png").unlink()
        return nod / "mask-2", "slice-1.png is missing"
    if how == "size mismatch":
        cv2.imwrite(str(nod / "mask-1" / "slice-0.png"), np.zeros((32, 64), np.uint8))
        return nod / "mask-1" / "slice-0.png", "does not match its image"
    if how == "16-bit":
        cv2.imwrite(str(nod / "images" / "slice-1.png"), np.zeros((64, 64), np.uint16))
        return nod / "images" / "slice-1.png", "uint16 PNG; the export's images are 8-bit"
    if how == "unreadable":
        (nod / "images" / "slice-1.png").write_bytes(b"not a png")
        return nod / "images" / "slice-1.png", "not a readable PNG"
    if how == "empty patient":
        (root / "LIDC-IDRI-0099").mkdir()
        return root / "LIDC-IDRI-0099", "empty patient folder"
    if how == "stray file":
        (nod / "images" / "notes.txt").write_text("x")
        return nod / "images" / "notes.txt", "unexpected file"
    if how == "colour image":
        cv2.imwrite(str(nod / "images" / "slice-0.png"), np.zeros((64, 64, 3), np.uint8))
        return nod / "images" / "slice-0.png", "3 channels"
    if how == "non-binary mask":
        m = np.zeros((64, 64), np.uint8)
        m[:4, :4] = 7
        m[4:8, 4:8] = 255
        cv2.imwrite(str(nod / "mask-0" / "slice-1.png"), m)
        return nod / "mask-0" / "slice-1.png", "not binary"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "no images",
        "fewer masks",
        "size mismatch",
        "16-bit",
        "unreadable",
        "empty patient",
        "stray file",
        "colour image",
        "non-binary mask",
    ],
)
def test_bad_input_is_one_line_naming_the_file(lidc_export, how, capsys):
    root = lidc_export()
    where, message = _break(root, how)
    before = set((cache_root() / "datasets").glob("*")) if (cache_root() / "datasets").exists() else set()
    assert main(["data", "info", str(root)]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and str(where) in err and "\n" not in err and "Traceback" not in err
    after = set((cache_root() / "datasets").glob("*")) if (cache_root() / "datasets").exists() else set()
    assert after == before  # nothing half-written in the cache
