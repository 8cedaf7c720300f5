"""Lung field, preprocessing and the on-disk cache."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from augforge.data.processing import cache
from augforge.data.processing.lungfield import fill_holes, lung_field, lung_only
from augforge.data.processing.preprocess import normalise, parse_window, preprocess
from augforge.data.records import NON_LUNG_HU, Deferred
from augforge.errors import DataError, UsageError


def drawn_chest() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A hand-drawn 128x128 slice: air, body, two lungs, a trachea, a solid nodule in a lung."""
    hu = np.full((128, 128), -1000.0, np.float32)
    parts = {}
    for name, centre, axes, value in (
        ("body", (64, 64), (58, 44), 40.0),
        ("right", (40, 62), (18, 28), -860.0),
        ("left", (88, 62), (18, 28), -860.0),
        ("trachea", (64, 40), (2, 2), -1000.0),
        ("nodule", (40, 60), (5, 5), 30.0),
    ):
        m = np.zeros((128, 128), np.uint8)
        cv2.ellipse(m, centre, axes, 0, 0, 360, 1, -1)
        hu[m > 0] = value
        parts[name] = m > 0
    return hu, parts


def test_lung_field_keeps_lungs_fills_nodules_drops_trachea_and_outside():
    hu, parts = drawn_chest()
    field = lung_field(hu)
    assert field[parts["right"]].all() and field[parts["left"]].all()
    assert field[parts["nodule"]].all()  # enclosed by lung: filled in
    assert not field[parts["trachea"]].any()  # too small to be lung
    assert not field[~parts["body"]].any()  # air around the patient touches the border


def test_lung_field_of_a_slice_without_lungs_is_empty():
    assert not lung_field(np.full((64, 64), 40.0, np.float32)).any()


def test_fill_holes_matches_scipy():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.random((33, 47)) < 0.55
        assert np.array_equal(fill_holes(a), ndimage.binary_fill_holes(a))


def test_lung_only_sets_non_lung_to_the_constant():
    hu, _ = drawn_chest()
    field = lung_field(hu)
    lung = lung_only(hu, field)
    assert lung.dtype == np.float32
    assert np.array_equal(lung[field], hu[field]) and (lung[~field] == NON_LUNG_HU).all()


def test_preprocess_is_float32_in_unit_range_and_deterministic():
    hu, _ = drawn_chest()
    lung = lung_only(hu, lung_field(hu)) + np.random.default_rng(1).normal(0, 20, hu.shape).astype(np.float32)
    a, b = preprocess(lung), preprocess(lung)
    assert a.dtype == np.float32 and a.shape == hu.shape
    assert 0.0 <= a.min() and a.max() <= 1.0 and np.array_equal(a, b)
    plain = preprocess(lung, clahe=False)
    assert plain.min() == 0.0 and plain.max() == pytest.approx(1.0)  # min-max, as in the paper
    assert not np.allclose(a, plain)  # CLAHE changed the contrast


def test_windows():
    assert parse_window("") is None
    assert parse_window("lung") == (-600.0, 1500.0)
    assert parse_window(" -600, 1500 ") == (-600.0, 1500.0)
    x = normalise(np.array([[-1400.0, -600.0, 200.0]], np.float32), "-600,1500")
    assert np.allclose(x, [[0.0, 0.5, 1.0]])
    assert (normalise(np.full((4, 4), 7.0, np.float32)) == 0).all()  # constant -> zeros
    for bad in ("abc", "1,2,3", "-600,0"):
        with pytest.raises(UsageError, match="data.window"):
            parse_window(bad)


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_root() == tmp_path / "a"
    monkeypatch.delenv("AUGFORGE_CACHE")
    assert cache.cache_root() == tmp_path / "x" / "augforge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_root() == cache.Path.home() / ".cache" / "augforge"


def small_stack(n: int = 3) -> cache.SliceStack:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 400, (n, 16, 16)).astype(np.float32)
    mask = np.zeros((n, 16, 16), np.uint8)
    mask[:, 5:8, 5:8] = 1
    records = [
        {
            "id": f"s{i}",
            "label": "LR3",
            "split": "train" if i else "test",
            "patient": f"p{i}",
            "source": "test",
            "spacing_mm": 1.0,
            "provenance": {"i": i},
        }
        for i in range(n)
    ]
    return cache.SliceStack(hu=hu, field=hu < -300, mask=mask, records=records, meta={"name": "t"})


def test_cache_roundtrip_is_exact_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path))
    built = []

    def build():
        built.append(1)
        return small_stack()

    stack, folder = cache.load_or_build("t", {"k": 1}, build)
    again, folder2 = cache.load_or_build("t", {"k": 1}, build)
    assert built == [1] and folder == folder2
    assert np.load(folder / "hu.npy").dtype == np.int16  # integer HU stored compactly
    assert np.array_equal(stack.hu, again.hu) and again.fingerprint == stack.fingerprint
    assert again.records == stack.records
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    images = cache.images(folder, again, "", True)
    assert images.shape == (3, 16, 16)
    assert np.array_equal(images, cache.images(folder, again, "", True))
    ds = cache.to_dataset(again, images, "t")
    assert [s.id for s in ds.test] == ["s0"] and np.shares_memory(ds.train[0].mask, again.mask)
    # Compact HU stay int16 in the stack; a slice converts its own on first read, to the same values.
    assert again.hu.dtype == np.int16 and isinstance(ds.train[1].__dict__["_hu"], Deferred)
    assert ds.train[1].hu.dtype == np.float32 and np.array_equal(ds.train[1].hu, stack.hu[2])
    assert ds.train[1].hu is ds.train[1].hu  # made once, then kept
    assert np.array_equal(ds.train[1].lung_hu, stack.lung_stack()[2]) and ds.train[1].lung_hu.dtype == np.float32
    assert cache.load_or_build("t", {"k": 2}, build)[1] != folder and built == [1, 1]
    # Reloaded arrays are writable, and writing to them never changes the cache.
    original = images.copy()
    ds.train[0].mask[:] = 7
    ds.train[0].image[:] = 0.5
    fresh = cache.load(folder)
    assert fresh.mask[1].max() == 1 and np.array_equal(cache.images(folder, fresh, "", True), original)


def test_damaged_cache_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path))
    _, folder = cache.load_or_build("t", {"k": 1}, small_stack)
    os.remove(folder / "mask.npy")
    with pytest.raises(DataError, match="damaged dataset cache"):
        cache.load(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format"] = -1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="delete the folder"):
        cache.load(folder)


@pytest.mark.parametrize("name", ["hu.npy", "mask.npy", "field.npy"])
def test_changed_bytes_in_a_cached_array_are_refused(tmp_path, monkeypatch, name):
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path))
    _, folder = cache.load_or_build("t", {"k": 1}, small_stack)
    raw = bytearray((folder / name).read_bytes())
    raw[-64:] = bytes(64) if any(raw[-64:]) else b"\x01" * 64  # overwrite data, keep the header: loads fine
    (folder / name).write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"{name}: changed since the dataset was built .*rm -r"):
        cache.load(folder)


def _age_the_verification(folder: Path, seconds: float = 10.0) -> None:
    """Move every check recorded in verified.json ``seconds`` later, as if the files had been
    written long before they were checked (a fresh build is always re-hashed: RACY_NS)."""
    stamp = json.loads((folder / cache.VERIFIED).read_text())
    for entry in stamp["files"].values():
        entry["checked_at_ns"] += int(seconds * 1e9)
    (folder / cache.VERIFIED).write_text(json.dumps(stamp))


def _count_hashes(monkeypatch) -> list[str]:
    hashed: list[str] = []
    real = cache.file_sha256
    monkeypatch.setattr(cache, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    return hashed


def test_files_checked_once_are_not_hashed_again_until_they_change(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path))
    stack, folder = cache.load_or_build("t", {"k": 1}, small_stack)
    cache.images(folder, cache.load(folder), "", True)
    hashed = _count_hashes(monkeypatch)
    cache.images(folder, cache.load(folder), "", True)
    assert {"hu.npy", "mask.npy", "field.npy"} <= set(hashed)  # written just now: not yet vouched for
    assert any(n.startswith("image-") for n in hashed)
    _age_the_verification(folder)
    hashed.clear()
    cache.images(folder, cache.load(folder), "", True)
    assert hashed == []
    time.sleep(0.05)  # past the file system's timestamp tick
    raw = bytearray((folder / "mask.npy").read_bytes())
    raw[-64:] = bytes(64) if any(raw[-64:]) else b"\x01" * 64
    before = (folder / "mask.npy").stat()
    (folder / "mask.npy").write_bytes(bytes(raw))
    os.utime(folder / "mask.npy", ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime
    with pytest.raises(DataError, match=r"mask.npy: changed since the dataset was built"):
        cache.load(folder)
    assert hashed == ["mask.npy"]  # the others are still vouched for


def test_a_stamp_that_expects_another_digest_or_is_malformed_vouches_for_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path))
    _, folder = cache.load_or_build("t", {"k": 1}, small_stack)
    cache.load(folder)
    _age_the_verification(folder)
    stamp = json.loads((folder / cache.VERIFIED).read_text())
    stamp["files"]["hu.npy"]["sha256"] = "0" * 64
    (folder / cache.VERIFIED).write_text(json.dumps(stamp))
    hashed = _count_hashes(monkeypatch)
    cache.load(folder)
    assert hashed == ["hu.npy"]
    for junk in ("[1, 2]", '{"files": {"hu.npy": [1, 2, 3, 4]}}', "not json"):
        (folder / cache.VERIFIED).write_text(junk)
        hashed.clear()
        cache.load(folder)
        assert sorted(hashed) == ["field.npy", "hu.npy", "mask.npy"]


def test_a_record_dropped_from_the_manifest_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path))
    _, folder = cache.load_or_build("t", {"k": 1}, small_stack)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["records"] = manifest["records"][:-1]  # same fingerprint, one slice fewer
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="records in manifest.json changed"):
        cache.load(folder)


def test_a_changed_preprocessed_image_file_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path))
    stack, folder = cache.load_or_build("t", {"k": 1}, small_stack)
    good = np.array(cache.images(folder, stack, "", True))
    (path,) = folder.glob("image-*.npy")
    assert (folder / (path.name + ".sha256")).is_file()
    raw = bytearray(path.read_bytes())
    raw[-256:] = b"\x00" * 256
    path.write_bytes(bytes(raw))
    assert np.array_equal(cache.images(folder, cache.load(folder), "", True), good)
    assert np.array_equal(np.load(path), good)  # and rewritten


def test_deferred_slice_arrays_behave_like_plain_ones(tmp_path, monkeypatch):
    """A reloaded slice's deferred HU pickle, copy, compare and replace like the arrays they stand for."""
    import copy
    import dataclasses
    import pickle

    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path))
    stack, folder = cache.load_or_build("t", {"k": 1}, small_stack)
    built = cache.to_dataset(stack, cache.images(folder, stack, "", False), "t").train[0]
    loaded = cache.load(folder)
    s = cache.to_dataset(loaded, cache.images(folder, loaded, "", False), "t").train[0]
    assert isinstance(s.__dict__["_hu"], Deferred) and isinstance(s.__dict__["_lung_hu"], Deferred)
    assert s.shape == built.shape  # read from the mask: converts nothing
    assert isinstance(s.__dict__["_hu"], Deferred)
    twin = pickle.loads(pickle.dumps(s))
    assert np.array_equal(twin.hu, built.hu) and np.array_equal(twin.lung_hu, built.lung_hu)
    assert np.array_equal(copy.deepcopy(s).lung_hu, built.lung_hu)
    edited = dataclasses.replace(s, label="LR3")
    assert edited.label == "LR3" and np.array_equal(edited.hu, built.hu)
    s.hu = np.zeros_like(built.hu)  # assignment replaces the deferred array
    assert not s.hu.any()
