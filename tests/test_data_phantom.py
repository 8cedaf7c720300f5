"""The embedded lidc-phantom dataset: sizes, class mix, split, provenance, realism, determinism."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from augforge.config import get_preset
from augforge.data.processing import lungrads
from augforge.data.processing.lungfield import lung_field
from augforge.data.records import NON_LUNG_HU, fingerprint_slices
from augforge.data.sources import anatomy, load_dataset, nodule, phantom
from augforge.errors import DataError


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(get_preset("tiny").data, progress=False)


def test_class_counts_scale_the_paper_mix():
    assert phantom.class_counts(264) == phantom.PAPER_TEST_MIX
    train = phantom.class_counts(708)
    assert sum(train.values()) == 708
    assert train == {"LR2": 94, "LR3": 99, "LR4A": 260, "LR4B": 255}
    assert phantom.class_counts(12) == {"LR2": 2, "LR3": 2, "LR4A": 4, "LR4B": 4}
    assert sum(phantom.class_counts(1).values()) == 1


def test_tiny_sizes_and_class_mix(tiny):
    cfg = get_preset("tiny").data
    assert (len(tiny.train), len(tiny.test), len(tiny.healthy)) == (cfg.n_train, cfg.n_test, cfg.n_healthy)
    assert Counter(s.label for s in tiny.test) == Counter(phantom.class_counts(cfg.n_test))
    assert Counter(s.label for s in tiny.train) == Counter(phantom.class_counts(cfg.n_train))
    assert {s.label for s in tiny.healthy} == {"LR1"}


def test_split_by_patient_and_unique_ids(tiny):
    train, test = {s.patient for s in tiny.train}, {s.patient for s in tiny.test}
    assert not train & test
    assert not {s.provenance["scan_id"] for s in tiny.train} & {s.provenance["scan_id"] for s in tiny.test}
    ids = [s.id for s in tiny.train + tiny.test + tiny.healthy]
    assert len(set(ids)) == len(ids)


def test_arrays_are_well_formed(tiny):
    for s in tiny.train + tiny.test + tiny.healthy:
        assert s.hu.shape == s.mask.shape == s.lung_hu.shape == s.image.shape == (64, 64)
        assert s.hu.dtype == s.lung_hu.dtype == s.image.dtype == np.float32 and s.mask.dtype == np.uint8
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert set(np.unique(s.mask)) <= {0, 1}
        assert s.lung_field is not None and s.lung_field.any()
        assert np.array_equal(s.lung_hu[~s.lung_field], np.full((~s.lung_field).sum(), NON_LUNG_HU, np.float32))
        assert s.spacing_mm == pytest.approx(anatomy.FOV_MM / 64)
    for s in tiny.train + tiny.test:
        assert s.mask.sum() >= nodule.MIN_MASK_PIXELS  # never an empty tumour, even at 5.6 mm pixels
        # The field comes from the image alone: a nodule on the pleura may fall outside it.
        assert np.array_equal(s.lung_field, lung_field(s.hu))
    assert not any(s.has_tumour for s in tiny.healthy)


def test_provenance_names_the_lidc_annotation(tiny):
    for s in tiny.train + tiny.test:
        p = s.provenance
        for key in ("scan_id", "patient_id", "annotation_id", "texture", "malignancy", "diameter_mm"):
            assert key in p
        assert s.patient == p["patient_id"]
        solid = p["solid_diameter_mm"]
        assert lungrads.classify(p["diameter_mm"], p["texture"], solid) == s.label


def test_reload_is_identical_and_fingerprint_is_stored(tiny):
    again = load_dataset(get_preset("tiny").data, progress=False)
    assert again.fingerprint == tiny.fingerprint == fingerprint_slices(again.train + again.test + again.healthy)
    for a, b in zip(tiny.train + tiny.test + tiny.healthy, again.train + again.test + again.healthy):
        assert a.id == b.id
        assert np.array_equal(a.hu, b.hu) and np.array_equal(a.image, b.image)


def test_same_seed_same_arrays_other_seed_other_arrays():
    one = phantom.build(48, 3, 2, 1, seed=5, progress=False)
    two = phantom.build(48, 3, 2, 1, seed=5, progress=False)
    other = phantom.build(48, 3, 2, 1, seed=6, progress=False)
    assert np.array_equal(one.hu, two.hu) and np.array_equal(one.mask, two.mask)
    assert one.records == two.records
    assert not np.array_equal(one.hu, other.hu)


def test_window_and_clahe_are_cached_separately(tiny):
    cfg = dataclasses.replace(get_preset("tiny").data, window="lung", clahe=False)
    windowed = load_dataset(cfg, progress=False)
    assert windowed.fingerprint == tiny.fingerprint  # same slices ...
    s = windowed.test[0]
    expected = np.clip((s.hu + 1350.0) / 1500.0, 0, 1)  # the whole slice: tiny's data.input
    assert np.allclose(s.image, expected, atol=1e-6)  # ... other network input
    lung = load_dataset(dataclasses.replace(cfg, input="lung"), progress=False).test[0]
    assert np.allclose(lung.image, np.clip((s.lung_hu + 1350.0) / 1500.0, 0, 1), atol=1e-6)
    grown = load_dataset(dataclasses.replace(cfg, input="lung", field_margin_mm=10.0), progress=False).test[0]
    assert (grown.image != lung.image).any() and (grown.image != s.image).any()


def test_chest_anatomy_has_the_expected_hounsfield_units():
    size = 128
    rng = np.random.default_rng(3)
    chest = anatomy.chest_slice(size, rng)
    hu = anatomy.finish(chest.hu, anatomy.FOV_MM / size, rng)
    field = lung_field(hu)
    assert field.any() and (field & chest.lung).sum() > 0.9 * chest.lung.sum()
    assert -900 < np.median(hu[chest.lung]) < -780  # lung parenchyma
    assert (hu[chest.lung] >= -100).sum() > 5  # vessels bright enough to avoid when pasting
    assert hu[0, 0] == anatomy.PADDING_HU  # outside the reconstruction circle
    assert hu.max() > 500  # bone
    outside = ~field & (hu > -200) & (hu < 200)
    assert outside.sum() > 0.1 * size * size  # soft tissue and fat make up the body


@pytest.mark.parametrize("texture", [1, 3, 5])
def test_nodule_hu_follows_texture(texture):
    size = 128
    spacing = anatomy.FOV_MM / size
    base = next(
        n
        for n in phantom.lidc.read_nodules()
        if n.texture == 5 and 15 < n.mean_diameter_mm < 25 and n.calcification == 6
    )
    nod = dataclasses.replace(base, texture=texture)
    rng = np.random.default_rng(0)
    chest = anatomy.chest_slice(size, rng)
    r = nodule.radius_px(nod.outline, nod.spacing_mm, spacing)
    centre, fits = nodule.choose_centre(chest.lung, r, (size / 2, size / 2), rng)
    before = chest.hu.copy()
    mask = nodule.render(chest.hu, nod, spacing, centre, 1.0, rng, 0.5).astype(bool)
    assert mask.sum() > 20 and fits
    inside = chest.hu[mask]
    assert np.median(inside) > np.median(before[mask]) + 150  # brighter than the lung it replaces
    if texture == 5:
        assert np.median(inside) > -100
    if texture == 1:
        assert -750 < np.median(inside) < -250
        # Ground glass has a soft edge: the haze reaches beyond the outline.
        ring = nodule.rasterise(nod.outline, nod.spacing_mm, spacing, centre, chest.hu.shape, 1.3).coverage > 0.5
        halo = np.zeros_like(mask)
        fp = nodule.rasterise(nod.outline, nod.spacing_mm, spacing, centre, chest.hu.shape, 1.3)
        halo[fp.row0 : fp.row0 + ring.shape[0], fp.col0 : fp.col0 + ring.shape[1]] = ring
        halo &= ~mask
        assert (chest.hu[halo] - before[halo]).mean() > 5


def test_mask_follows_the_real_outline_area():
    size = 256
    spacing = anatomy.FOV_MM / size
    n = next(n for n in phantom.lidc.read_nodules() if 200 < n.area_mm2 < 400)
    fp = nodule.rasterise(n.outline, n.spacing_mm, spacing, (100.3, 90.6), (size, size))
    assert fp.mask.sum() * spacing**2 == pytest.approx(n.area_mm2, rel=0.15)


def test_bad_sizes_are_refused():
    with pytest.raises(DataError):
        phantom.build(16, 2, 1, 0, 0, progress=False)
    with pytest.raises(DataError):
        phantom.build(64, 2, 0, 0, 0, progress=False)


def test_worker_processes_give_the_same_arrays(monkeypatch):
    monkeypatch.setenv("AUGFORGE_DATA_WORKERS", "1")
    serial = phantom.build(40, 30, 4, 2, seed=9, progress=False)  # 36 slices: two chunks
    monkeypatch.setenv("AUGFORGE_DATA_WORKERS", "2")
    pooled = phantom.build(40, 30, 4, 2, seed=9, progress=False)
    assert np.array_equal(serial.hu, pooled.hu) and np.array_equal(serial.mask, pooled.mask)
    assert np.array_equal(serial.field, pooled.field) and serial.records == pooled.records


def test_image_is_the_network_input_of_the_slice(tiny):
    from augforge.data.processing.preprocess import network_input, preprocess

    for s in tiny.test + tiny.healthy[:3]:
        assert np.array_equal(s.image, network_input(s, mode="whole"))  # what new slices get too
        assert np.array_equal(s.image, preprocess(s.hu))
