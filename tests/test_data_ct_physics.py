"""lidc-phantom with CT physics at two sites (``data.physics = "ct"``): the scanner model's noise,
kernel and partial volume, the paired held-out-site slices, and that the published v4 phantom is
untouched by it."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from augforge.bench import floors
from augforge.config import get_preset
from augforge.data.sources import anatomy, lidc, load_dataset, nodule, phantom, scanner
from augforge.errors import DataError
from augforge.strategy import PrepareContext

SPACING = 360.0 / 256


def _radial_power(x: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean |FFT|^2 in rings of spatial frequency (cycles/mm): (frequencies, power)."""
    n = x.shape[0]
    p = np.abs(np.fft.fft2(x)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n, spacing), np.fft.fftfreq(n, spacing)))
    edges = np.linspace(0, f.max(), 24)
    idx = np.digitize(f.ravel(), edges)
    power = np.array([p.ravel()[idx == k].mean() for k in range(1, len(edges))])
    return 0.5 * (edges[1:] + edges[:-1]), power


def test_ct_noise_has_the_asked_level_and_a_band_pass_spectrum():
    rng = np.random.default_rng(0)
    noise = np.stack([scanner.ct_noise((256, 256), SPACING, 0.8, 20.0, rng) for _ in range(8)])
    assert noise.std() == pytest.approx(20.0, rel=0.05)
    f, power = _radial_power(noise[0], SPACING)
    low, mid = power[f < 0.04].mean(), power[(f > 0.15) & (f < 0.3)].mean()
    # Filtered back-projection: the ramp leaves little power near zero frequency (blurred white
    # noise would have its most there).
    assert low < 0.25 * mid
    blurred = cv2.GaussianBlur(rng.standard_normal((256, 256)).astype(np.float32), (7, 7), 0.7)
    f2, power2 = _radial_power(blurred, SPACING)
    assert power2[f2 < 0.04].mean() > power2[(f2 > 0.15) & (f2 < 0.3)].mean()


def test_the_held_out_site_is_sharper_noisier_and_offset():
    hu = np.full((256, 256), 40.0, np.float32)
    hu[100:156, 100:156] = -850.0
    a = scanner.acquire(hu, SPACING, scanner.SITES[scanner.TRAIN_SITE], np.random.default_rng(1), 320.0)
    b = scanner.acquire(hu, SPACING, scanner.SITES[scanner.HELD_OUT_SITE], np.random.default_rng(1), 320.0)
    flat = (slice(10, 60), slice(10, 60))
    assert a[flat].std() < b[flat].std()
    assert np.array_equal(a, np.rint(a)) and a.min() >= -1024
    # The sharp kernel overshoots at an edge: a dark rim just outside the bright square's... inside
    # the dark square, next to the bright tissue, the held-out site's mean row profile dips below.
    prof_a = a[110:146, 90:110].mean(axis=0)
    prof_b = b[110:146, 90:110].mean(axis=0)
    assert prof_b.max() > prof_a.max() + 10  # overshoot on the bright side of the edge
    assert b[flat].mean() - a[flat].mean() > 2  # the held-out site reads higher (its HU offset)


def test_noise_grows_with_the_patient_width():
    site = scanner.SITES[scanner.TRAIN_SITE]
    narrow = scanner.noise_sd(site, 280.0, np.random.default_rng(3))
    wide = scanner.noise_sd(site, 380.0, np.random.default_rng(3))
    assert wide > 1.4 * narrow


def test_partial_volume_fades_small_nodules_in_thick_slices_and_keeps_large_cores():
    small = np.zeros((40, 40), np.float32)
    cv2.circle(small, (20, 20), 1, 1.0, -1)  # about 4 mm across
    large = np.zeros((60, 60), np.float32)
    cv2.circle(large, (30, 30), 8, 1.0, -1)  # about 24 mm across
    thin = scanner.partial_volume(small, SPACING, 1.25)
    thick = scanner.partial_volume(small, SPACING, 2.5, offset_mm=1.0)
    assert thick.sum() < thin.sum() <= small.sum()
    big = scanner.partial_volume(large, SPACING, 2.5, offset_mm=1.0)
    assert big[30, 30] == pytest.approx(1.0) and big.sum() > 0.95 * large.sum()


@pytest.fixture(scope="module")
def ct():
    cfg = dataclasses.replace(get_preset("tiny").data, physics="ct")
    return load_dataset(cfg, progress=False)


def test_ct_data_pair_every_test_and_training_slice_with_the_held_out_site(ct):
    cfg = get_preset("tiny").data
    assert (len(ct.train), len(ct.test), len(ct.healthy)) == (cfg.n_train, cfg.n_test, cfg.n_healthy)
    assert len(ct.shifted) == len(ct.test) and len(ct.train_shifted) == len(ct.train)
    for a, b in [*zip(ct.test, ct.shifted), *zip(ct.train, ct.train_shifted)]:
        assert b.id == f"{a.id}@{scanner.HELD_OUT_SITE}" and b.label == a.label and b.patient == a.patient
        assert np.array_equal(a.mask, b.mask)  # the same nodule, the same label
        assert not np.array_equal(a.hu, b.hu)  # acquired by another scanner
        assert np.corrcoef(a.hu.ravel(), b.hu.ravel())[0, 1] > 0.9  # the same anatomy
        assert a.provenance["site"] == scanner.TRAIN_SITE and b.provenance["site"] == scanner.HELD_OUT_SITE
    assert {s.provenance["site"] for s in ct.healthy} == {scanner.TRAIN_SITE}
    assert ct.meta["physics"] == "ct" and ct.meta["physics_card"] == scanner.card()


def test_strategies_never_see_the_held_out_site(ct, tmp_path):
    ctx = PrepareContext.for_dataset(ct, seed=0, preset=get_preset("tiny"), cache_dir=tmp_path)
    seen = {s.id for s in ctx.healthy}
    assert not seen & {s.id for s in ct.shifted + ct.train_shifted}


def test_ct_data_are_reproducible_and_differ_from_v4(ct):
    cfg = get_preset("tiny").data
    again = phantom.build(cfg.size, cfg.n_train, cfg.n_test, cfg.n_healthy, cfg.seed, progress=False, physics="ct")
    first = phantom.build(cfg.size, cfg.n_train, cfg.n_test, cfg.n_healthy, cfg.seed, progress=False, physics="ct")
    assert np.array_equal(first.hu, again.hu) and np.array_equal(first.mask, again.mask)
    v4 = load_dataset(cfg, progress=False)
    assert v4.fingerprint != ct.fingerprint and not v4.shifted
    # The same nodules in the same order: only the imaging differs.
    assert [s.label for s in v4.test] == [s.label for s in ct.test]


def test_unknown_physics_is_refused():
    with pytest.raises(DataError, match="physics 'x' unknown"):
        phantom.build(64, 4, 4, 0, 0, progress=False, physics="x")


def test_the_report_scores_every_strategy_at_the_held_out_site(tmp_path):
    from conftest import commit_fake_trial

    from augforge.bench.report import write_report
    from augforge.bench.store import ResultsStore

    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.8, size=(3, 40))
    store = ResultsStore(tmp_path)
    for seed in range(3):
        # The baseline loses 0.2 at the held-out site; "robust" scores as well in-domain and loses 0.05.
        commit_fake_trial(store, "none", seed, base[seed], shifted_values=base[seed] - 0.2)
        noise = rng.normal(0, 0.005, 40)
        commit_fake_trial(store, "robust", seed, base[seed] + noise, shifted_values=base[seed] - 0.05 + noise)
    board = write_report(store, n_boot=400)
    by = {r.label: r for r in board.shift}
    assert by["none"].gap.delta == pytest.approx(-0.2, abs=1e-9) and by["none"].vs_baseline is None
    robust = by["robust"]
    assert robust.gap.delta == pytest.approx(-0.05, abs=0.005)
    assert robust.vs_baseline.delta == pytest.approx(0.15, abs=0.005) and robust.significant
    assert robust.gap_vs_baseline.delta == pytest.approx(0.15, abs=0.005) and robust.gap_vs_baseline.low > 0
    report = store.report_path.read_text()
    section = report.split("## At the held-out scanner site", 1)[1].split("\n## ", 1)[0]
    line = next(x for x in section.splitlines() if x.startswith("| `robust`"))
    assert "significant" in line and "+0.150" in line
    assert (tmp_path / "per_image_shifted.csv").exists()
    # Data acquired at one site: no such section.
    one = ResultsStore(tmp_path / "one")
    commit_fake_trial(one, "none", 0, base[0])
    assert write_report(one, n_boot=200).shift == [] and "## At the held-out" not in one.report_path.read_text()


def test_a_bench_run_on_two_site_data_scores_the_held_out_site(tmp_path):
    import json

    from augforge.cli import main

    out = tmp_path / "run"
    argv = ["bench", "--strategy", "flip", "--preset", "tiny", "--no-progress", "--no-samples"]
    # One epoch: the test is about where the held-out scores go, not how good they are.
    assert main([*argv, "--set", "data.physics=ct", "--set", "train.epochs=1", "--out", str(out)]) == 0
    records = [json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines()]
    assert {r["strategy"] for r in records} == {"none", "flip"}
    n_test = get_preset("tiny").data.n_test
    for r in records:
        assert r["dataset"]["n_shifted"] == n_test and 0.0 <= r["shifted"]["metrics"]["dice"] <= 1.0
    lines = (out / "per_image_shifted.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * n_test and all("@held-out-site" in x for x in lines[1:])
    assert "## At the held-out scanner site" in (out / "report.md").read_text()


def test_preview_shows_the_held_out_site_and_refuses_it_on_one_site_data(tmp_path, capsys):
    from augforge.cli import main

    out = tmp_path / "held.png"
    assert (
        main(
            [
                "data",
                "preview",
                "lidc-phantom",
                "--preset",
                "tiny",
                "--physics",
                "ct",
                "--site",
                "held-out",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.stat().st_size > 1000
    code = main(
        ["data", "preview", "lidc-phantom", "--preset", "tiny", "--site", "held-out", "--out", str(tmp_path / "x.png")]
    )
    assert code != 0 and "acquired at one site; give --physics ct" in capsys.readouterr().err


def _square_reading(aid: int, x0: float, y0: float, side: float) -> lidc.LidcNodule:
    """An LIDC-like reading whose outline is a square of ``side`` native pixels at (x0, y0)."""
    pts = np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]], float)
    outline = lidc.Outline(0.0, (pts,), (), side * side)
    return lidc.LidcNodule(
        annotation_id=aid,
        scan_id=1,
        patient_id="P",
        series_uid="S",
        texture=5,
        malignancy=3,
        calcification=6,
        spacing_mm=1.0,
        n_slices=3,
        outline=outline,
        long_axis_mm=side * 2**0.5,
        short_axis_mm=side,
        centroid_px=(float(pts[:, 0].mean()), float(pts[:, 1].mean())),
    )


def test_the_label_is_the_other_readers_consensus_placed_where_they_drew():
    drawn = _square_reading(1, 100, 100, 10)
    # Two readers 4 px to the right of the drawn reader, one 4 px to the left: the majority is right.
    others = (_square_reading(2, 104, 100, 10), _square_reading(3, 104, 100, 10), _square_reading(4, 96, 100, 10))
    label = nodule.consensus_label(drawn, others, 1.0, (50.0, 50.0), 1.0, (100, 100))
    fp = nodule.rasterise(drawn.outline, 1.0, 1.0, (50.0, 50.0), (100, 100))
    mine = np.zeros((100, 100), bool)
    mine[fp.row0 : fp.row0 + fp.mask.shape[0], fp.col0 : fp.col0 + fp.mask.shape[1]] = fp.mask
    assert label is not None and int(label.sum()) == int(mine.sum())  # the same square, moved by whole pixels
    cols = np.nonzero(label.any(axis=0))[0]
    mine_cols = np.nonzero(mine.any(axis=0))[0]
    assert cols.min() == mine_cols.min() + 4 and cols.max() == mine_cols.max() + 4
    # Votes are counted per pixel: one reader of two is enough, one of three is not.
    pair = nodule.consensus_label(drawn, others[1:], 1.0, (50.0, 50.0), 1.0, (100, 100))
    assert pair is not None and int(pair.sum()) > int(label.sum())
    lone = nodule.consensus_label(drawn, others[2:] + others[2:] + others[:1], 1.0, (50.0, 50.0), 1.0, (100, 100))
    assert lone is not None and np.nonzero(lone.any(axis=0))[0].min() == mine_cols.min() - 4
    # No other reader, or others that agree on nothing: the caller keeps the drawn outline.
    assert nodule.consensus_label(drawn, (), 1.0, (50.0, 50.0), 1.0, (100, 100)) is None
    apart = (_square_reading(5, 140, 100, 10), _square_reading(6, 60, 100, 10), _square_reading(7, 100, 140, 10))
    assert nodule.consensus_label(drawn, apart, 1.0, (50.0, 50.0), 1.0, (100, 100)) is None


def test_ct_images_show_one_reader_and_the_label_is_the_others(ct):
    """readers[0] is the outline drawn into the image, readers[1] the label; they differ where the
    nodule's readers disagree, and the data have a readers' ceiling below 1 that floors report."""
    tumours = [s for s in ct.train + ct.test if s.mask.any()]
    assert tumours and all(s.readers is not None and s.readers.shape == (2, *s.mask.shape) for s in tumours)
    for s in tumours:
        assert np.array_equal(s.readers[1], s.mask)
        drawn, label = s.readers[0].astype(bool), s.mask.astype(bool)
        dice = 2 * (drawn & label).sum() / (drawn.sum() + label.sum())
        assert dice == pytest.approx(s.provenance["drawn_label_dice"], abs=1e-4)
        if s.provenance["label_readers"] == 0:
            assert dice == 1.0
    assert any(s.provenance["drawn_label_dice"] < 1.0 for s in tumours)
    rows = [r for r in floors.floor_rows(ct) if r["floor"] == floors.CEILING]
    assert len(rows) == len(ct.test)
    want = np.mean([s.provenance["drawn_label_dice"] for s in ct.test])
    assert np.mean([r["dice"] for r in rows]) == pytest.approx(want, abs=1e-3)


def test_oblique_vessels_fade_and_smear_in_thick_slices():
    square_on = anatomy.VesselSection(0.0, 0.0, 3.0, 1.0, 0.0)
    tilted = anatomy.VesselSection(0.0, 0.0, 3.0, 0.6, 0.0)
    a, b, c = square_on.footprint(2.5)
    assert (a, b, c) == (1.5, 1.5, 1.0)  # cut square-on: round, full contrast at any thickness
    thin, thick = tilted.footprint(1.25), tilted.footprint(2.5)
    assert thick[2] < thin[2] < 1.0 and thick[0] > thin[0] > 1.5 / 0.6 - 1e-9
    for major, minor, contrast in (thin, thick):  # the blood in the slab is conserved
        assert np.pi * major * minor * contrast == pytest.approx(np.pi * 1.5**2 / 0.6)
    # Painted: the same tilted 2 mm vessel is fainter at the held-out site's thickness.
    rng = np.random.default_rng(0)
    chest = anatomy.chest_slice(256, rng)
    lung = np.argwhere(chest.lung)[len(np.argwhere(chest.lung)) // 2]
    x, y = ((lung[1] - 127.5) * SPACING, (lung[0] - 127.5) * SPACING)
    vessel = [anatomy.VesselSection(x, y, 2.0, 0.6, 30.0)]
    added = []
    for slice_mm in (1.25, 2.5):
        hu = chest.hu.copy()
        anatomy.paint_vessel_sections(hu, chest, vessel, SPACING, slice_mm)
        added.append(hu - chest.hu)
    assert added[1].max() < added[0].max() - 50
    assert (added[1] > 1).sum() > (added[0] > 1).sum()  # fainter but longer


def test_other_readings_are_the_same_nodules_other_readers():
    nodules = lidc.read_nodules()
    others = lidc.other_readings()
    by_id = {n.annotation_id: n for n in nodules}
    assert set(others) == set(by_id)
    with_others = [aid for aid, o in others.items() if o]
    assert len(with_others) > len(nodules) // 2  # most LIDC nodules were outlined by several readers
    for aid in with_others[:500]:
        n = by_id[aid]
        for o in others[aid]:
            assert o.annotation_id != aid and o.scan_id == n.scan_id and o.group == n.group
            assert aid in {x.annotation_id for x in others[o.annotation_id]}  # symmetric
