"""The `copy-paste` strategy: real training tumours, moved, pasted into healthy lung parenchyma."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from augforge import PrepareContext
from augforge.config import get_preset
from augforge.data.processing.lungrads import classify
from augforge.data.records import LUNG_RADS_CLASSES, Slice
from augforge.data.sources import load_dataset
from augforge.errors import DataError, UsageError
from augforge.plugins import get_registry
from augforge.synthesis import allowed_region, canvas_lung


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(get_preset("tiny").data, progress=False)


def make_ctx(healthy: list[Slice], seed: int = 0, logs: list[str] | None = None) -> PrepareContext:
    return PrepareContext(
        seed=seed,
        healthy=healthy,
        preset=get_preset("tiny"),
        cache_dir=Path("/nonexistent"),
        log=(logs.append if logs is not None else lambda m: None),
        progress=False,
    )


def copy_paste(**params):
    return get_registry().create("copy-paste", {"copy-paste": params} if params else None)


def synthetic(slices: list[Slice]) -> list[Slice]:
    return [s for s in slices if s.source == "synthetic:copy-paste"]


# -- hand-made slices: known tumour, known lung ---------------------------------------------------


def chest(sid: str, *, size: int = 96, spacing: float = 0.8, tumour_radius: float = 0.0, seed: int = 0) -> Slice:
    """Soft tissue (40 HU) around one square lung (-850 HU, noise 15 HU); optionally a solid disc
    tumour (30 HU) of ``tumour_radius`` pixels in the lung's centre."""
    rng = np.random.default_rng(seed)
    hu = np.full((size, size), 40.0, np.float32)
    lung = np.zeros((size, size), bool)
    lung[12 : size - 12, 12 : size - 12] = True
    hu[lung] = -850.0 + rng.normal(0, 15, lung.sum())
    mask = np.zeros((size, size), np.uint8)
    label = "LR1"
    if tumour_radius:
        yy, xx = np.mgrid[:size, :size]
        disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= tumour_radius**2
        hu[disc] = 30.0 + rng.normal(0, 15, disc.sum())
        mask[disc] = 1
        label = classify(2 * tumour_radius * spacing, 5)
    return Slice(
        id=sid,
        hu=hu,
        lung_hu=np.where(lung, hu, -1024.0).astype(np.float32),
        mask=mask,
        label=label,
        spacing_mm=spacing,
        patient=sid,
        source="hand-made",
        lung_field=lung,
    )


def test_a_real_tumour_keeps_its_size_hu_and_class_when_only_moved():
    donor = chest("donor", tumour_radius=7, seed=1)  # 11.2 mm solid: LR4A
    canvases = [chest(f"canvas-{k}", seed=10 + k) for k in range(3)]
    strategy = copy_paste(scale_min=1.0, scale_max=1.0, p_mirror=0.0)
    out = synthetic(strategy.prepare([donor], make_ctx(canvases)))
    assert len(out) == 1
    s = out[0]
    added = s.mask.astype(bool)
    assert abs(int(added.sum()) - int(donor.mask.sum())) <= 0.1 * donor.mask.sum()  # any turn keeps the area
    assert ndimage.label(added)[1] == 1
    assert np.median(s.hu[added]) > -100  # solid tissue, not parenchyma
    p = s.provenance
    assert p["donor"] == "donor" and p["donor_tumour"] == 0 and p["canvas"].startswith("canvas-")
    assert p["texture"] == 5 and abs(p["diameter_mm"] - 2 * 7 * 0.8) < 2.0
    assert s.label == p["nodule_label"] == "LR4A"


def test_sizes_follow_mm_not_pixels():
    """A donor at 0.8 mm per pixel pasted into a canvas at 1.6 mm per pixel covers a quarter of the pixels."""
    donor = chest("donor", tumour_radius=10, spacing=0.8, seed=1)
    canvases = [chest("coarse", spacing=1.6, seed=2)]
    s = synthetic(copy_paste(scale_min=1.0, scale_max=1.0).prepare([donor], make_ctx(canvases)))[0]
    ratio = s.mask.sum() / donor.mask.sum()
    assert 0.2 < ratio < 0.3
    assert abs(s.provenance["diameter_mm"] - 16.0) < 2.5


def test_turn_mirrors_and_rotates_about_the_centre():
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 100, (32, 32)).astype(np.float32)
    cover = np.zeros((32, 32), np.float32)
    cover[8:14, 10:24] = 1.0  # a bar off-centre: any wrong turn or flip moves it
    turn = type(copy_paste()).turn
    h0, m0 = turn(hu, cover, 0.0, False)
    assert np.array_equal(m0, cover >= 0.5) and np.allclose(h0, hu)
    h90, m90 = turn(hu, cover, 90.0, False)
    assert np.array_equal(m90, np.rot90(cover >= 0.5)) and np.allclose(h90, np.rot90(hu), atol=1e-3)
    _, mm = turn(hu, cover, 0.0, True)
    assert np.array_equal(mm, np.fliplr(cover >= 0.5))
    _, m45 = turn(hu, cover, 45.0, False)
    assert abs(int(m45.sum()) - int(m0.sum())) <= 0.1 * m0.sum()


# -- the embedded phantom ---------------------------------------------------------------------------


def test_adds_ratio_slices_labelled_by_the_pasted_nodule(tiny):
    out = copy_paste().prepare(tiny.train, make_ctx(tiny.healthy))
    assert out[: len(tiny.train)] == tiny.train
    syn = synthetic(out)
    assert len(syn) == len(tiny.train)  # ratio 1 (every tiny canvas has room)
    assert len(synthetic(copy_paste(ratio=0.5).prepare(tiny.train, make_ctx(tiny.healthy)))) == len(tiny.train) // 2
    assert len({s.id for s in syn}) == len(syn)
    canvases = {s.id for s in tiny.healthy}
    for s in syn:
        p = s.provenance
        assert p["canvas"] in canvases and p["strategy"] == "copy-paste"
        solid = p["solid_diameter_mm"] if p["texture"] == 3 else None
        assert s.label == classify(p["diameter_mm"], p["texture"], solid) and s.label in LUNG_RADS_CLASSES[1:]


def test_tumours_lie_on_parenchyma_with_binary_aligned_masks(tiny):
    syn = synthetic(copy_paste().prepare(tiny.train, make_ctx(tiny.healthy)))
    canvases = {s.id: s for s in tiny.healthy}
    for s in syn:
        canvas = canvases[s.provenance["canvas"]]
        assert s.mask.dtype == np.uint8 and set(np.unique(s.mask)) == {0, 1}
        added = s.mask.astype(bool) & ~canvas.mask.astype(bool)
        assert added.any()
        # Every tumour pixel on the canvas's parenchyma, clear of vessels and the lung wall.
        lung = canvas_lung(canvas)
        assert not (added & ~allowed_region(canvas.hu, lung, clearance_px=1.0)).any()
        # The image changed only where the tumour and its soft edge are: image and mask align.
        changed = np.abs(s.hu - canvas.hu) > 1e-3
        assert not (changed & ~ndimage.binary_dilation(added, iterations=2)).any()
        assert np.array_equal(s.lung_hu[lung], s.hu[lung]) and s.image is None


def test_donors_come_from_the_real_training_slices_only(tiny):
    train = tiny.train[:6]
    fake = Slice(
        id="synthetic-x",
        hu=tiny.train[7].hu,
        lung_hu=tiny.train[7].lung_hu,
        mask=tiny.train[7].mask,
        label=tiny.train[7].label,
        spacing_mm=tiny.train[7].spacing_mm,
        patient="x",
        source="synthetic:other",
    )
    out = copy_paste(ratio=3.0).prepare(train + [fake], make_ctx(tiny.healthy))
    syn = synthetic(out)
    assert len(syn) == 3 * len(train)  # the ratio counts real slices only
    donors = {s.provenance["donor"] for s in syn}
    assert donors == {s.id for s in train}  # each real tumour is used; the synthetic one never
    assert not donors & {s.id for s in tiny.test}


def test_same_seed_same_slices_other_seed_other_slices(tiny):
    a = synthetic(copy_paste().prepare(tiny.train, make_ctx(tiny.healthy, seed=3)))
    b = synthetic(copy_paste().prepare(tiny.train, make_ctx(tiny.healthy, seed=3)))
    c = synthetic(copy_paste().prepare(tiny.train, make_ctx(tiny.healthy, seed=4)))
    assert [s.provenance for s in a] == [s.provenance for s in b]
    assert all(np.array_equal(x.hu, y.hu) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
    assert [s.provenance for s in a] != [s.provenance for s in c]


def test_generate_returns_the_moved_patches_and_the_real_ones(tiny):
    gen = copy_paste().generate(tiny.train, make_ctx(tiny.healthy), 5)
    assert len(gen.slices) == 5 and gen.patches_hu.shape == gen.patches_mask.shape == (5, 64, 64)
    assert gen.real_hu.shape[1:] == (64, 64) and gen.info["requested"] == 5 and gen.info["made"] == 5


def test_errors_say_what_to_do(tiny):
    with pytest.raises(UsageError, match=r"copy-paste.scale_min: 1.2 is outside \["):
        copy_paste(scale_min=1.2)
    with pytest.raises(DataError, match="no real tumour to copy"):
        copy_paste().prepare(list(tiny.healthy), make_ctx(tiny.healthy))
    assert copy_paste(ratio=0.0).prepare(tiny.train, make_ctx([])) == tiny.train


@pytest.mark.parametrize("canvases", ["train", "healthy"])
def test_without_healthy_slices_tumours_go_into_training_slices_clear_of_their_own(tiny, canvases):
    # canvases=train asks for it; the default (healthy) falls back to it on data without healthy
    # slices, and says so in the log.
    logs: list[str] = []
    syn = synthetic(copy_paste(canvases=canvases).prepare(tiny.train, make_ctx([], logs=logs)))
    assert len(syn) == len(tiny.train)
    assert any("no healthy slices; pasting into the" in m for m in logs) == (canvases == "healthy")
    by_id = {s.id: s for s in tiny.train}
    for s in syn:
        canvas = by_id[s.provenance["canvas"]]
        own = canvas.mask.astype(bool)
        added = s.mask.astype(bool) & ~own
        assert added.any() and s.mask[own].all()  # the canvas's tumour stays labelled
        assert ndimage.distance_transform_edt(~own)[added].min() > 2.0  # and untouched by the new one
        assert LUNG_RADS_CLASSES.index(s.label) == max(
            LUNG_RADS_CLASSES.index(canvas.label), LUNG_RADS_CLASSES.index(s.provenance["nodule_label"])
        )
