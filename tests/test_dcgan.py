"""The DCGAN networks and fit (augforge.models.dcgan) and the `dcgan` / `dcgan-paper` strategies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from augforge import PrepareContext
from augforge.cli import main
from augforge.config import apply_overrides, get_preset
from augforge.data.sources import load_dataset
from augforge.errors import DataError, UsageError
from augforge.models import count_parameters
from augforge.models.dcgan import (
    DCGANConfig,
    Discriminator,
    Generator,
    load_generator,
    sample,
    save_generator,
    train_dcgan,
)
from augforge.plugins import get_registry
from augforge.synthesis import canvas_lung


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(get_preset("tiny").data, progress=False)


def make_ctx(tiny, cache: Path, seed: int = 0, logs: list[str] | None = None, **preset_over) -> PrepareContext:
    preset = apply_overrides(get_preset("tiny"), preset_over)
    return PrepareContext(
        seed=seed,
        healthy=tiny.healthy,
        preset=preset,
        cache_dir=cache,
        log=(logs.append if logs is not None else lambda m: None),
        progress=False,
        dataset_fingerprint=tiny.fingerprint,
    )


def blobs(n: int = 32, size: int = 16, channels: int = 2, seed: int = 0) -> torch.Tensor:
    """Bright discs of random radius on a dark background, in [-1, 1] (mask as channel 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    r = rng.uniform(2, size / 3, n)[:, None, None]
    m = (yy**2 + xx**2 <= r**2).astype(np.float32)
    x = np.stack([m * 1.4 - 0.7, m * 2 - 1][:channels], axis=1)
    return torch.from_numpy(x.astype(np.float32))


# -- networks -----------------------------------------------------------------------------------


def test_paper_architecture_has_the_papers_parameter_counts():
    assert count_parameters(Generator(latent_dim=128, width=64, size=64, channels=1)) == 3_804_032
    assert count_parameters(Discriminator(width=64, size=64, channels=1)) == 2_763_648


@pytest.mark.parametrize("size,upsample", [(16, "transposed"), (32, "nearest"), (64, "transposed")])
def test_shapes(size, upsample):
    g = Generator(latent_dim=8, width=4, size=size, channels=2, upsample=upsample)
    d = Discriminator(width=4, size=size, channels=2)
    x = g(torch.randn(3, 8, 1, 1))
    assert x.shape == (3, 2, size, size) and x.abs().max() <= 1
    assert d(x).shape == (3,)
    with pytest.raises(ValueError, match="power of two"):
        Generator(size=48)


# -- the fit ------------------------------------------------------------------------------------


def small_cfg(**kw) -> DCGANConfig:
    base = {
        "size": 16,
        "channels": 2,
        "latent_dim": 8,
        "width": 4,
        "epochs": 2,
        "batch_size": 8,
        "seed": 3,
        "augment": True,
    }
    return DCGANConfig(**{**base, **kw})


def weights(g: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in g.state_dict().values()]


def test_fit_is_seeded():
    a = train_dcgan(blobs(), small_cfg(), progress=False, log=lambda m: None)
    b = train_dcgan(blobs(), small_cfg(), progress=False, log=lambda m: None)
    c = train_dcgan(blobs(), small_cfg(seed=4), progress=False, log=lambda m: None)
    assert all(torch.equal(x, y) for x, y in zip(weights(a.generator), weights(b.generator)))
    assert not all(torch.equal(x, y) for x, y in zip(weights(a.generator), weights(c.generator)))
    assert [set(r) for r in a.history] == [{"loss_d", "loss_g", "d_real", "d_fake", "diversity", "epoch"}] * 2


def test_interrupted_fit_resumes_to_the_same_generator(tmp_path):
    whole = train_dcgan(blobs(), small_cfg(epochs=3), progress=False, log=lambda m: None)
    logs: list[str] = []
    # "Interrupted" after one epoch: the checkpoint holds epoch 1; the next call resumes from it.
    train_dcgan(blobs(), small_cfg(epochs=1, checkpoint_every=1), out_dir=tmp_path, progress=False, log=logs.append)
    resumed = train_dcgan(
        blobs(),
        small_cfg(epochs=3, checkpoint_every=1, sample_every=1),
        out_dir=tmp_path,
        progress=False,
        log=logs.append,
    )
    assert resumed.resumed_from == 1 and any("resuming from epoch 1/3" in m for m in logs)
    assert all(torch.equal(x, y) for x, y in zip(weights(whole.generator), weights(resumed.generator)))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    grids = ["epoch-0001.png", "epoch-0002.png", "epoch-0003.png"]  # the first call's final grid too
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == grids
    # A checkpoint of another configuration is not resumed.
    other = train_dcgan(blobs(), small_cfg(epochs=1, width=6), out_dir=tmp_path, progress=False, log=logs.append)
    assert other.resumed_from == 0 and any("another configuration" in m for m in logs)


def test_collapse_is_warned():
    logs: list[str] = []
    # With a vanishing learning rate the generator stays at its initial, near-constant output.
    r = train_dcgan(blobs(), small_cfg(epochs=2, lr=1e-12), progress=False, log=logs.append)
    assert any(w.startswith("diversity:") for w in r.warnings)
    assert any("collapsing" in m for m in logs)
    healthy = train_dcgan(blobs(64, seed=1), small_cfg(epochs=2, lr=2e-3), progress=False, log=lambda m: None)
    assert not any(w.startswith("d-loss") for w in healthy.warnings)


def test_generator_save_load_and_sampling(tmp_path):
    g = Generator(latent_dim=8, width=4, size=16, channels=2, upsample="nearest").eval()
    save_generator(g, tmp_path / "g.pt", {"key": "abc"})
    h, meta = load_generator(tmp_path / "g.pt")
    assert meta == {"key": "abc"} and h.upsample == "nearest"
    a, b = sample(g, 5, seed=1), sample(h, 5, seed=1)
    assert a.shape == (5, 2, 16, 16) and np.array_equal(a, b)
    assert not np.array_equal(a, sample(g, 5, seed=2))
    assert sample(g, 0, seed=0).shape == (0, 2, 16, 16)


# -- the strategies -----------------------------------------------------------------------------


def test_registered_with_parameters():
    reg = get_registry()
    assert {"dcgan", "dcgan-paper"} <= set(reg.names())
    assert reg.entries["dcgan"].plugin == reg.entries["dcgan-paper"].plugin
    s = reg.create("dcgan", {"dcgan": {"width": "8", "ratio": "0.5"}})
    cfg = s.fit_config(get_preset("tiny"), trial_seed=7)
    tiny_gen = get_preset("tiny").gen
    assert (cfg.width, cfg.latent_dim, cfg.size, cfg.epochs) == (
        8,
        tiny_gen.latent_dim,
        tiny_gen.roi_size,
        tiny_gen.epochs,
    )
    assert cfg.channels == 2 and cfg.seed == 0  # gen_seed 0, not the trial's seed
    assert reg.create("dcgan", {"dcgan": {"gen_seed": "none"}}).fit_config(get_preset("tiny"), 7).seed == 7
    paper = reg.create("dcgan-paper").fit_config(get_preset("quick"), 0)
    assert (paper.size, paper.channels, paper.width, paper.latent_dim) == (64, 1, 64, 128)
    assert (paper.lr, paper.beta1, paper.beta2, paper.real_label) == (2e-4, 0.5, 0.999, 1.0)
    assert get_registry().create("dcgan-paper").fit_config(get_preset("paper"), 0).epochs == 300
    with pytest.raises(UsageError, match="roi_size"):
        reg.create("dcgan", {"dcgan": {"roi_size": "48"}})


def test_prepare_adds_synthetic_slices_and_never_sees_the_test_split(tiny, tmp_path):
    logs: list[str] = []
    strategy = get_registry().create("dcgan", {"dcgan": {"ratio": "0.5"}})
    out = strategy.prepare(list(tiny.train), make_ctx(tiny, tmp_path, logs=logs))
    real, synthetic = out[: len(tiny.train)], out[len(tiny.train) :]
    assert [s.id for s in real] == [s.id for s in tiny.train]
    assert len(synthetic) == round(0.5 * len(tiny.train))
    healthy = {s.id: s for s in tiny.healthy}
    for s in synthetic:
        assert s.source == "synthetic:dcgan" and s.image is None
        assert s.mask.dtype == np.uint8 and set(np.unique(s.mask)) == {0, 1}
        canvas = healthy[s.provenance["canvas"]]
        assert canvas_lung(canvas)[s.mask == 1].all(), "pasted tumours lie inside the lung field"
        assert s.label in {"LR2", "LR3", "LR4A", "LR4B"}
        assert s.hu.shape == canvas.hu.shape and s.spacing_mm == canvas.spacing_mm
    # Provenance: the generator was fitted on training slices only.
    key = synthetic[0].provenance["generator"]
    meta = json.loads((tmp_path / f"dcgan-{key}" / "meta.json").read_text())
    assert set(meta["trained_on"]) <= {s.id for s in tiny.train}
    assert not set(meta["trained_on"]) & {s.id for s in tiny.test}
    assert not (tmp_path / f"dcgan-{key}" / "checkpoint.pt").exists()
    assert any("fitting generator" in m for m in logs)


def test_a_changed_damaged_or_empty_generator_file_is_refused(tmp_path):
    g = Generator(latent_dim=8, width=4, size=16, channels=2, upsample="nearest").eval()
    path = tmp_path / "g.pt"
    save_generator(g, path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = np.random.default_rng(0).bytes(64)
    path.write_bytes(bytes(raw))  # random bytes inside the weights: loads silently without a checksum
    with pytest.raises(DataError, match="changed since it was written"):
        load_generator(path)
    path.write_bytes(b"")
    (tmp_path / "g.pt.sha256").write_text(hashlib.sha256(b"").hexdigest())  # consistent, but empty
    with pytest.raises(DataError, match="not a generator") as err:
        load_generator(path)
    assert "weights_only" not in str(err.value)  # torch's advice to unpickle is never passed on
    (tmp_path / "g.pt.sha256").unlink()
    with pytest.raises(DataError, match="no checksum beside it"):
        load_generator(path)


def test_an_unusable_cached_generator_is_fitted_again(tiny, tmp_path):
    strategy = get_registry().create("dcgan")
    first = strategy.prepare(list(tiny.train), make_ctx(tiny, tmp_path, seed=0))
    (cached,) = tmp_path.glob("dcgan-*/generator.pt")
    cached.write_bytes(b"")  # used to fail every later run
    logs: list[str] = []
    again = strategy.prepare(list(tiny.train), make_ctx(tiny, tmp_path, seed=0, logs=logs))
    assert any("cannot be used" in m and "fitting it again" in m for m in logs)
    assert [s.id for s in again] == [s.id for s in first]
    assert all(np.array_equal(a.hu, b.hu) for a, b in zip(first, again))  # the same fit, the same slices
    assert not any("reusing generator" in m for m in logs)


def test_generator_is_cached_across_seeds_and_refit_when_its_data_change(tiny, tmp_path, monkeypatch):
    strategy = get_registry().create("dcgan")
    first = strategy.prepare(list(tiny.train), make_ctx(tiny, tmp_path, seed=0))
    import augforge.models.dcgan as dcgan_module

    def no_fit(*a, **k):
        raise AssertionError("the generator was fitted again")

    monkeypatch.setattr(dcgan_module, "train_dcgan", no_fit)
    logs: list[str] = []
    second = strategy.prepare(list(tiny.train), make_ctx(tiny, tmp_path, seed=1, logs=logs))
    assert any("reusing generator" in m for m in logs)
    key = {s.provenance["generator"] for s in first + second if s.source.startswith("synthetic")}
    assert len(key) == 1

    # Another seed samples other tumours in other places.
    def positions(out):
        return [s.provenance["position"] for s in out if s.source.startswith("synthetic")]

    assert positions(first) != positions(second)
    # Another training split is another generator.
    with pytest.raises(AssertionError, match="fitted again"):
        strategy.prepare(list(tiny.train[:-2]), make_ctx(tiny, tmp_path, seed=0))


def test_same_seed_same_synthetic_slices(tiny, tmp_path):
    strategy = get_registry().create("dcgan")
    a = strategy.prepare(list(tiny.train), make_ctx(tiny, tmp_path, seed=5))
    b = strategy.prepare(list(tiny.train), make_ctx(tiny, tmp_path, seed=5))
    assert all(np.array_equal(x.hu, y.hu) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b))


def test_paper_variant_thresholds_its_image_into_a_mask(tiny, tmp_path):
    strategy = get_registry().create("dcgan-paper", {"dcgan-paper": {"ratio": "0.25"}})
    out = strategy.prepare(list(tiny.train), make_ctx(tiny, tmp_path))
    synthetic = [s for s in out if s.source == "synthetic:dcgan-paper"]
    assert len(synthetic) == round(0.25 * len(tiny.train))
    for s in synthetic:
        assert s.mask.any() and set(np.unique(s.mask)) == {0, 1}
        # The paper kept tumours above row 350 of 512.
        assert np.flatnonzero(s.mask.any(1)).max() < round(350 / 512 * s.shape[0])
    hu, mask = strategy.decode(np.stack([np.full((1, 64, 64), 1.0), np.full((1, 64, 64), -0.9)]))
    assert not mask[0].any() and mask[1].all() and hu[0, 0, 0] == pytest.approx(2000.0)


def test_without_healthy_canvases_tumours_go_into_training_slices(tiny, tmp_path):
    logs: list[str] = []
    ctx = make_ctx(tiny, tmp_path, logs=logs)
    ctx.healthy = []
    out = get_registry().create("dcgan").prepare(list(tiny.train), ctx)
    syn = [s for s in out if s.source == "synthetic:dcgan"]
    train = {s.id: s for s in tiny.train}
    assert syn and all(s.provenance["canvas"] in train for s in syn)
    assert any("no healthy slices; pasting into the" in m for m in logs)
    with pytest.raises(DataError, match="no slices to paste tumours into"):
        get_registry().create("dcgan").synthesize(None, [], 3, seed=0)


# -- the command line ---------------------------------------------------------------------------


def test_generate_command_writes_a_dataset_grids_and_a_quality_summary(tmp_path, capsys):
    out = tmp_path / "gen"
    args = [
        "generate",
        "--strategy",
        "dcgan",
        "--n",
        "6",
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--seed",
        "2",
        "--no-progress",
        "--set",
        "dcgan.width=6",
    ]
    assert main(args) == 0
    ids = [line.split(",")[0] for line in (out / "labels.csv").read_text().splitlines()[1:]]
    assert len(ids) == 6
    for i in ids:
        hu, mask = np.load(out / "images" / f"{i}.npy"), np.load(out / "masks" / f"{i}.npy")
        assert hu.dtype == np.float32 and mask.shape == hu.shape and mask.any()
    for name in ("tumours.png", "pasted.png", "quality.md", "provenance.jsonl"):
        assert (out / name).stat().st_size > 0
    quality = json.loads((out / "quality.json").read_text())
    assert quality["n_generated"] == 6 and quality["generator"]["made"] == 6
    # The files are in the folder dataset format (a training-only part, to merge with a dataset).
    from augforge.data.sources.folder import read_array

    assert (out / "labels.csv").read_text().splitlines()[0] == "id,label,split,patient,spacing_mm"
    np.testing.assert_array_equal(
        read_array(out / "images" / f"{ids[0]}.npy")[0], np.load(out / "images" / f"{ids[0]}.npy")
    )
    # Refuses to overwrite; a strategy without a generator is a usage error.
    assert main(args) == 2
    assert main(["generate", "--strategy", "none", "--n", "2", "--out", str(tmp_path / "x"), "--preset", "tiny"]) == 2
    assert "does not generate" in capsys.readouterr().err
    assert main(["generate", "--n", "0", "--out", str(tmp_path / "y"), "--preset", "tiny"]) == 2
    assert main(["generate", "--n", "2", "--preset", "tiny"]) == 2
    assert "--out DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_runs_dcgan_and_fits_the_generator_once_across_seeds(tmp_path, capsys):
    from augforge.data.processing.cache import cache_root

    generators = cache_root() / "generators"
    before = set(generators.glob("dcgan-*")) if generators.exists() else set()
    code = main(
        [
            "bench",
            "--strategy",
            "dcgan",
            "--preset",
            "tiny",
            "--seeds",
            "2",
            "--out",
            str(tmp_path / "study"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    # One fit; reused by the second seed's trial and by the report's sample grid.
    assert out.count("fitting generator") == 1 and out.count("reusing generator") == 2
    assert (tmp_path / "study" / "figures" / "samples" / "dcgan.png").is_file()
    assert len(set(generators.glob("dcgan-*")) - before) == 1
    board = (tmp_path / "study" / "leaderboard.csv").read_text()
    assert "dcgan" in board and "none" in board
