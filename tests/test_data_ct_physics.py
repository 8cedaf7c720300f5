"""lidc-phantom with CT physics at two sites (``data.physics = "ct"``): the scanner model's noise,
kernel and partial volume, the paired held-out-site slices, and that the published v4 phantom is
untouched by it."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from augforge.config import get_preset
from augforge.data.sources import load_dataset, phantom, scanner
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
