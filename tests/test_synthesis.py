"""Tumour patches, placement, paste-in and the quality summary (augforge.synthesis)."""

from __future__ import annotations

import numpy as np
import pytest

from augforge.config import get_preset
from augforge.data.records import NON_LUNG_HU, Slice
from augforge.data.sources import load_dataset
from augforge.errors import DataError
from augforge.synthesis import (
    PARENCHYMA_HU,
    VESSEL_HU,
    HUScale,
    allowed_region,
    blend_tumour,
    canvas_lung,
    clean_mask,
    estimate_noise_hu,
    extract_rois,
    measure_nodule,
    paste_tumour,
    pick_position,
    quality_summary,
    resize_patch,
    valid_positions,
)


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(get_preset("tiny").data, progress=False)


def brute_force_positions(allowed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The definition, one position at a time."""
    (H, W), (h, w) = allowed.shape, mask.shape
    out = np.zeros((max(H - h + 1, 0), max(W - w + 1, 0)), bool)
    for r in range(H - h + 1):
        for c in range(W - w + 1):
            out[r, c] = allowed[r : r + h, c : c + w][mask].all()
    return out


def disc(radius: float, size: int | None = None) -> np.ndarray:
    size = size or int(2 * np.ceil(radius) + 1)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return yy**2 + xx**2 <= radius**2


# -- placement ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_valid_positions_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    H, W = rng.integers(12, 40, 2)
    allowed = rng.random((H, W)) < rng.uniform(0.6, 0.97)
    allowed[: rng.integers(0, 5)] = False  # a forbidden band, so the allowed box is not the slice
    h, w = rng.integers(1, 16, 2)  # OpenCV correlates masks from about 11x11 by DFT: test both
    mask = rng.random((h, w)) < 0.6
    mask[0, 0] = False  # empty corners: the mask may overhang the allowed pixels' bounding box
    if not mask.any():
        mask[-1, -1] = True
    np.testing.assert_array_equal(valid_positions(allowed, mask), brute_force_positions(allowed, mask))


def test_valid_positions_on_a_lung_slice_equal_brute_force(tiny):
    canvas = tiny.healthy[0]
    allowed = allowed_region(canvas.hu, canvas_lung(canvas), clearance_px=0)
    for radius in (1.0, 2.5, 4.0, 7.0):
        mask = disc(radius)
        fast = valid_positions(allowed, mask)
        np.testing.assert_array_equal(fast, brute_force_positions(allowed, mask))
        if radius == 1.0:
            assert fast.any(), "a small disc should fit somewhere in the lungs of a healthy slice"


def test_valid_positions_edge_cases():
    allowed = np.ones((6, 6), bool)
    assert valid_positions(allowed, np.ones((7, 2), bool)).shape == (0, 5)
    assert valid_positions(np.zeros((6, 6), bool), np.ones((2, 2), bool)).sum() == 0
    assert valid_positions(allowed, np.ones((6, 6), bool)).tolist() == [[True]]


def test_allowed_region_excludes_vessels_walls_and_low_rows():
    hu = np.full((20, 20), -850.0)
    lung = np.zeros((20, 20), bool)
    lung[2:18, 2:18] = True
    hu[10, 5:15] = 40.0  # a vessel
    region = allowed_region(hu, lung, clearance_px=0)
    assert not region[~lung].any() and not region[10, 5:15].any()
    assert region[5, 5] and region[11, 5]
    clear = allowed_region(hu, lung, clearance_px=1)
    assert not clear[2].any() and not clear[11, 8] and not clear[9, 8]  # next to the wall / vessel
    assert clear[4, 8]
    assert not allowed_region(hu, lung, clearance_px=0, max_row=8)[8:].any()
    assert (hu[allowed_region(hu, lung)] < VESSEL_HU).all()


def test_pick_position_is_valid_seeded_and_none_when_impossible():
    valid = np.zeros((10, 10), bool)
    valid[3, 4] = valid[7, 1] = True
    picks = {pick_position(valid, np.random.default_rng(s)) for s in range(20)}
    assert picks == {(3, 4), (7, 1)}
    assert pick_position(valid, np.random.default_rng(5)) == pick_position(valid, np.random.default_rng(5))
    assert pick_position(np.zeros((3, 3), bool), np.random.default_rng(0)) is None


# -- tumour patches -----------------------------------------------------------------------------


def test_extract_rois_from_training_tumours(tiny):
    rois = extract_rois(tiny.train, size=32, margin_frac=0.25, margin_px=1, square=True, background_hu=PARENCHYMA_HU)
    assert rois.hu.shape == rois.mask.shape == (len(rois), 32, 32)
    assert len(rois) >= len(tiny.train)  # at least one tumour per training slice
    assert set(rois.slice_ids) <= {s.id for s in tiny.train}
    assert set(np.unique(rois.mask)) <= {0, 1} and rois.mask.reshape(len(rois), -1).any(1).all()
    assert (rois.hu[rois.coverage == 0] == PARENCHYMA_HU).all()
    np.testing.assert_array_equal(rois.mask, rois.coverage >= 0.5)
    assert (rois.crop_mm > 0).all()
    # A square crop with a margin: the tumour never touches the patch's border.
    border = np.concatenate([rois.mask[:, 0], rois.mask[:, -1], rois.mask[:, :, 0], rois.mask[:, :, -1]], 1)
    assert not border.any()
    # Tumour HU stay tumour HU (no background mixed into the rim by the resize).
    assert rois.hu[rois.mask == 1].min() > -900


def test_extract_rois_paper_convention_and_errors(tiny):
    rois = extract_rois(tiny.train[:3], size=64)
    assert rois.hu.shape[1:] == (64, 64) and (rois.hu[rois.coverage == 0] == 2000.0).all()
    s = tiny.train[0]
    # The crop is the bounding box plus 10 pixels each side, in mm.
    rows = np.flatnonzero(s.mask.any(1))
    expected_mm = (rows[-1] - rows[0] + 1 + 20) * s.spacing_mm
    assert rois.crop_mm[0, 0] == pytest.approx(expected_mm)
    with pytest.raises(DataError, match="no tumour"):
        extract_rois(tiny.healthy, size=32)


def test_hu_scale_round_trip():
    scale = HUScale(-1100.0, 500.0)
    hu = np.array([-1100.0, -850.0, 0.0, 500.0], np.float32)
    np.testing.assert_allclose(scale.to_hu(scale.to_unit(hu)), hu, atol=1e-3)
    assert scale.to_unit(np.array([-5000.0, 5000.0])).tolist() == [-1.0, 1.0]


# -- paste-in -----------------------------------------------------------------------------------


def test_clean_and_resize_patch():
    m = np.zeros((12, 12), bool)
    m[2:8, 2:8] = True
    m[4, 4] = False  # a hole
    m[10, 10] = True  # a speck
    cleaned = clean_mask(m)
    assert cleaned[4, 4] and not cleaned[10, 10] and cleaned.sum() == 36
    hu = np.where(m, 30.0, 2000.0).astype(np.float32)
    hu_r, m_r = resize_patch(hu, m, (6, 6))
    assert hu_r.shape == m_r.shape == (6, 6) and m_r.dtype == bool and m_r.any()
    assert np.abs(hu_r[m_r] - 30.0).max() < 1e-3  # the 2000 HU background never leaks in


def test_measure_nodule_sizes_and_texture():
    spacing = 0.5
    solid = disc(10.0, 25)  # 21 pixels across = 10.5 mm
    m = measure_nodule(np.full(solid.shape, 40.0), solid, spacing)
    assert m.diameter_mm == pytest.approx(10.5, abs=0.6)
    assert (m.texture, m.label) == (5, "LR4A")
    ggo = measure_nodule(np.full(solid.shape, -500.0), solid, spacing)
    assert (ggo.texture, ggo.label) == (1, "LR2")
    mixed = np.where(disc(4.0, 25), 40.0, -500.0)
    part = measure_nodule(mixed, solid, spacing)
    assert part.texture == 3 and part.solid_diameter_mm == pytest.approx(4.5, abs=0.6)
    assert part.label == "LR3"  # total >= 6 mm, solid part < 6 mm


def test_blend_has_a_soft_edge_and_leaves_the_rest_alone():
    hu = np.full((30, 30), -850.0, np.float32)
    mask = disc(5.0)
    out, placed = blend_tumour(hu, np.full(mask.shape, 40.0, np.float32), mask, (8, 9), feather_px=1.5)
    assert placed.dtype == np.uint8 and placed.sum() == mask.sum()
    assert placed[8 : 8 + 11, 9 : 9 + 11].astype(bool).tolist() == mask.tolist()
    inner = disc(3.0, 11)
    assert np.allclose(out[8:19, 9:20][inner], 40.0)  # the tumour's interior is the tumour
    changed = out != -850.0
    ring = changed & (placed == 0)
    assert ring.any(), "the edge is blended into the parenchyma, not cut out"
    assert -850.0 < out[ring].min() and out[ring].max() < 40.0
    # Nothing beyond two pixels of the mask changes: no square patch edge.
    from scipy import ndimage

    near = ndimage.binary_dilation(placed.astype(bool), iterations=2)
    assert not changed[~near].any()
    hard, _ = blend_tumour(hu, np.full(mask.shape, 40.0, np.float32), mask, (8, 9), feather_px=0)
    assert set(np.unique(hard)) == {-850.0, 40.0}
    with pytest.raises(ValueError, match="outside"):
        blend_tumour(hu, np.zeros((5, 5), np.float32), np.ones((5, 5), bool), (27, 0))


def test_paste_into_a_healthy_slice(tiny):
    canvas = tiny.healthy[1]
    lung = canvas_lung(canvas)
    mask = disc(3.0)
    tumour = np.full(mask.shape, 30.0, np.float32)
    allowed = allowed_region(canvas.hu, lung, clearance_px=1)
    pos = pick_position(valid_positions(allowed, mask), np.random.default_rng(0))
    assert pos is not None
    rng = np.random.default_rng(1)
    noise = estimate_noise_hu(canvas.hu, allowed)
    assert 3 < noise < 60, "the phantom's scanner noise is in the tens of HU"
    s = paste_tumour(
        canvas,
        tumour,
        mask,
        pos,
        slice_id="syn-0",
        source="synthetic:test",
        noise_hu=noise,
        rng=rng,
        provenance={"note": "x"},
    )
    assert isinstance(s, Slice) and s.image is None and s.source == "synthetic:test"
    assert s.mask.dtype == np.uint8 and set(np.unique(s.mask)) == {0, 1}
    assert s.mask.sum() == mask.sum() and not canvas.mask.any()
    # Inside the lung field, off the vessels, and the HU under the mask are the tumour's.
    assert lung[s.mask == 1].all() and allowed[s.mask == 1].all()
    r, c = pos
    core = s.hu[r : r + 7, c : c + 7][disc(1.5, 7)]
    assert abs(float(np.median(core)) - 30.0) < noise
    # The mask's edge pixels are mostly tumour too (the ramp is centred on the boundary).
    assert (s.hu[s.mask == 1] > -850 + 0.6 * 880).all()
    assert (s.lung_hu[~lung] == NON_LUNG_HU).all()
    np.testing.assert_array_equal(s.lung_hu[lung], s.hu[lung])
    assert s.label in {"LR2", "LR3", "LR4A", "LR4B"} and s.label == s.provenance["nodule_label"]
    assert s.provenance["canvas"] == canvas.id and s.provenance["note"] == "x"
    assert s.provenance["position"] == list(pos) and s.lung_field is not None
    assert canvas.hu.max() == tiny.healthy[1].hu.max()  # the canvas itself is untouched
    assert not np.shares_memory(s.hu, canvas.hu)


# -- quality summary ----------------------------------------------------------------------------


def test_quality_summary_separates_copies_from_noise(tiny):
    rois = extract_rois(tiny.train, size=32, margin_frac=0.25, square=True, background_hu=PARENCHYMA_HU)
    same = quality_summary(rois.hu, rois.mask, rois.hu, rois.mask, feature_steps=40)
    assert same.hu_wasserstein == pytest.approx(0.0, abs=1e-6)
    assert same.near_copy_share == 1.0 and same.nn_median_generated == pytest.approx(0.0, abs=1e-4)
    assert same.shape_generated == same.shape_real
    rng = np.random.default_rng(0)
    noise_hu = rng.uniform(-1000, 400, rois.hu.shape).astype(np.float32)
    noise_mask = rng.random(rois.hu.shape) < 0.5
    noise = quality_summary(rois.hu, rois.mask, noise_hu, noise_mask, feature_steps=40)
    assert noise.frechet > 3 * noise.frechet_real_halves
    assert noise.hu_wasserstein > 100 and noise.near_copy_share == 0.0
    assert noise.shape_generated["pieces"] > 5 * noise.shape_real["pieces"]
    assert "Fréchet" in noise.to_markdown()
    again = quality_summary(rois.hu, rois.mask, noise_hu, noise_mask, feature_steps=40)
    assert again.frechet == noise.frechet  # seeded
