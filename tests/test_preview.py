"""``augforge preview``: original and augmented slices side by side, for any strategy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from augforge import Param, Strategy, hookimpl
from augforge.cli import main
from augforge.cli import preview as preview_mod
from augforge.config import get_preset
from augforge.data.records import Dataset
from augforge.plugins import get_registry

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_dataset() -> Dataset:
    from augforge.data.sources import load_dataset

    return load_dataset(get_preset("tiny").data, progress=False)


@pytest.fixture
def use_tiny(monkeypatch, tiny_dataset):
    """The CLI loads the (already built) tiny phantom without touching the cache again."""
    monkeypatch.setattr(preview_mod, "load_dataset", lambda cfg, progress=True: tiny_dataset)
    return tiny_dataset


class AddMirrored(Strategy):
    """An offline strategy: adds a mirrored copy of each training slice (test strategy)."""

    name = "test-add-mirrored"
    description = "Adds mirrored copies of the training slices (test strategy)."
    params = (Param("count", int, 3, "slices to add", low=0, high=100),)

    def prepare(self, train, ctx):
        added = [
            dataclasses.replace(
                s,
                id=f"{s.id}-mirrored",
                image=s.image[:, ::-1].copy(),
                mask=s.mask[:, ::-1].copy(),
                source="synthetic:test",
            )
            for s in train[: self.p.count]
        ]
        return list(train) + added


class AddMirroredPlugin:
    @hookimpl
    def register_strategies(self, register):
        register(AddMirrored)


def _pairs(spec, dataset, *, n=4, seed=0, tmp_path, params=None):
    strategy = get_registry().create(spec, params)
    return preview_mod.preview_pairs(
        strategy,
        dataset,
        n=n,
        seed=seed,
        preset=get_preset("tiny"),
        cache_dir=tmp_path,
        log=lambda msg: None,
        progress=False,
    )


def test_online_strategy_pairs_each_slice_with_its_augmented_version(tiny_dataset, tmp_path):
    pairs, caption = _pairs("classical", tiny_dataset, n=6, tmp_path=tmp_path)
    assert len(pairs) == 6 and caption == "training slices"
    ids = {s.id: s for s in tiny_dataset.train}
    for pair in pairs:
        source = ids[pair.title.split(" ")[0]]
        assert pair.image is source.image and source.has_tumour
        assert pair.augmented.shape == pair.image.shape and set(np.unique(pair.augmented_mask)) <= {0, 1}


def test_same_seed_same_preview_other_seed_other_slices(tiny_dataset, tmp_path):
    a, _ = _pairs("affine", tiny_dataset, seed=1, tmp_path=tmp_path)
    b, _ = _pairs("affine", tiny_dataset, seed=1, tmp_path=tmp_path)
    c, _ = _pairs("affine", tiny_dataset, seed=2, tmp_path=tmp_path)
    assert [p.title for p in a] == [p.title for p in b]
    assert all(np.array_equal(x.augmented, y.augmented) for x, y in zip(a, b))
    assert [p.title for p in a] != [p.title for p in c]


def test_prepare_strategies_show_the_slices_they_add(register_plugin, tiny_dataset, tmp_path):
    with register_plugin(AddMirroredPlugin(), "test-add-mirrored-plugin"):
        pairs, caption = _pairs("test-add-mirrored", tiny_dataset, n=8, tmp_path=tmp_path)
        assert caption == "slices added by test-add-mirrored's prepare step; no online transform"
        assert len(pairs) == 3 and all(p.title.split(" ")[0].endswith("-mirrored") for p in pairs)
        assert all(p.augmented is None for p in pairs)
        # a hybrid: the added slices, each beside itself after the online transform
        pairs, caption = _pairs("test-add-mirrored+flip", tiny_dataset, tmp_path=tmp_path, params={"flip": {"p": 1.0}})
        assert caption == "slices added by test-add-mirrored+flip's prepare step"
        assert all(np.array_equal(p.augmented, p.image[:, ::-1]) for p in pairs)


def test_draw_writes_a_grid_with_both_columns(tiny_dataset, tmp_path):
    import matplotlib.image

    pairs, _ = _pairs("flip", tiny_dataset, n=5, tmp_path=tmp_path, params={"flip": {"p": 1.0}})
    out = tmp_path / "grid.png"
    preview_mod.draw_preview(pairs, out, "flip")
    picture = matplotlib.image.imread(out)
    # 5 pairs, 4 per row: 2 rows of 8 panels, 2 inches each at 100 dpi
    assert picture.shape[1] == 1600 and 400 < picture.shape[0] < 500


def test_cli_writes_the_png(use_tiny, tmp_path, capsys):
    out = tmp_path / "sub" / "classical.png"
    assert (
        main(
            [
                "preview",
                "--strategy",
                "classical",
                "--n",
                "4",
                "--preset",
                "tiny",
                "--seed",
                "3",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    err = capsys.readouterr().err
    assert "strategy classical, seed 3, preset tiny" in err and f"wrote {out}: 4 samples" in err


def test_cli_third_party_and_composite_with_parameters(use_tiny, register_plugin, tmp_path):
    out = tmp_path / "hybrid.png"
    with register_plugin(AddMirroredPlugin(), "test-add-mirrored-plugin"):
        assert (
            main(
                [
                    "preview",
                    "-s",
                    "test-add-mirrored+affine",
                    "--set",
                    "test-add-mirrored.count=2",
                    "--set",
                    "affine.p=1",
                    "--preset",
                    "tiny",
                    "-o",
                    str(out),
                    "--no-progress",
                ]
            )
            == 0
        )
    assert out.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--strategy", "flip", "--n", "0"], "--n 0: give a number of samples from 1 to 64"),
        (["--strategy", "flpi"], "unknown strategy 'flpi'; did you mean 'flip'?"),
        (["--strategy", "flip", "--set", "affine.p=1"], "'affine' is not a preset section"),
        (["--strategy", "flip", "--set", "flip.q=1"], "strategy 'flip' has no parameter 'q'"),
        (["--strategy", "flip", "--set", "train.epoch=1"], "train has no field 'epoch'"),
    ],
)
def test_cli_errors_are_one_line(use_tiny, tmp_path, capsys, args, fragment):
    assert main(["preview", *args, "--preset", "tiny", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1 and err.startswith("error: ")


def test_cli_refuses_an_unknown_image_format(tmp_path, capsys):
    assert main(["preview", "--strategy", "flip", "--out", str(tmp_path / "x.bmpx")]) == 2
    assert "cannot tell the image format" in capsys.readouterr().err
