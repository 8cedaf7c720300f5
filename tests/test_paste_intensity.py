"""Paste-in on images without Hounsfield units, and on data without healthy slices (crop exports)."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from augforge import PrepareContext
from augforge.cli import main
from augforge.config import DataConfig, get_preset
from augforge.data.sources import load_dataset
from augforge.errors import DataError
from augforge.plugins import get_registry
from augforge.synthesis import HU_SCALE, PARENCHYMA_HU, VESSEL_HU, otsu_threshold, paste_scale


@pytest.fixture
def crops(lidc_export):
    return load_dataset(DataConfig(source=str(lidc_export())), progress=False)


def test_on_hounsfield_units_the_anchors_are_the_physical_constants():
    assert paste_scale("HU", []) is HU_SCALE
    assert (HU_SCALE.parenchyma, HU_SCALE.dense) == (PARENCHYMA_HU, VESSEL_HU)


def test_otsu_threshold_separates_two_populations():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 2, 5000), rng.normal(90, 5, 1000)])
    assert 20 < otsu_threshold(values) < 80
    with pytest.raises(ValueError, match="all values are equal"):
        otsu_threshold(np.full(10, 3.0))


def test_on_8bit_crops_the_anchors_come_from_the_images_not_the_masks(crops):
    # The fixture's crops: background around 60, a nodule at 200 (tests/conftest.py).
    scale = paste_scale("8-bit", crops.train)
    assert scale.unit == "8-bit" and 80 < scale.dense < 180 and abs(scale.parenchyma - 60) < 6
    assert 0 <= scale.lo < 40 and 200 <= scale.hi <= 255
    moved = [dataclasses.replace(s, mask=np.roll(s.mask, 9, axis=1)) for s in crops.train]
    assert paste_scale("8-bit", moved) == scale
    lung = scale.lung(crops.train[0])
    assert lung.mean() > 0.5 and not lung[crops.train[0].mask > 0].any()  # the bright nodule is not lung
    flat = [dataclasses.replace(s, hu=np.full_like(s.hu, 7.0)) for s in crops.train]
    with pytest.raises(DataError, match="uniform"):
        paste_scale("8-bit", flat)
    with pytest.raises(DataError, match="there are none"):
        paste_scale("8-bit", [])


@pytest.mark.parametrize("name", ["copy-paste", "dcgan"])
def test_paste_in_on_8bit_crops_goes_into_training_slices_on_the_dark_side(crops, tmp_path, name):
    assert not crops.healthy and crops.meta["intensity"] == "8-bit"
    logs: list[str] = []
    ctx = PrepareContext(
        seed=0,
        healthy=[],
        preset=get_preset("tiny"),
        cache_dir=tmp_path,
        log=logs.append,
        progress=False,
        dataset_fingerprint=crops.fingerprint,
        intensity="8-bit",
    )
    out = get_registry().create(name).prepare(list(crops.train), ctx)
    syn = [s for s in out if s.source == f"synthetic:{name}"]
    assert len(syn) >= len(crops.train) // 2, logs
    scale = paste_scale("8-bit", crops.train)
    train = {s.id: s for s in crops.train}
    test_ids = {s.id for s in crops.test}
    for s in syn:
        canvas = train[s.provenance["canvas"]]
        assert canvas.id not in test_ids
        own = canvas.mask > 0
        added = (s.mask > 0) & ~own
        assert added.any() and s.mask[own].all()  # the crop's own nodule stays labelled ...
        assert ndimage.distance_transform_edt(~own)[added].min() > 2.0  # ... and untouched
        assert (canvas.hu[added] < scale.dense).all()  # the new tumour lies where the crop is dark
        assert np.array_equal(s.hu[own], canvas.hu[own])
        if name == "copy-paste":  # a real nodule moved: bright like the donors
            assert s.hu[added].mean() > scale.dense


def test_bench_runs_dcgan_on_an_8bit_export(lidc_export, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "bench",
            "--data",
            str(lidc_export()),
            "--strategy",
            "dcgan",
            "--preset",
            "tiny",
            "--set",
            "train.epochs=2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert {r["strategy"] for r in rows if r["rank"].isdigit()} == {"none", "dcgan"}
    assert "no healthy slices; pasting into the" in (out / "run.log").read_text()
