"""The mask-conditioned diffusion model (augforge.models.ddpm) and the `ddpm` strategy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augforge import PrepareContext
from augforge.cli import main
from augforge.config import apply_overrides, get_preset
from augforge.data.processing.cache import cache_root
from augforge.data.sources import load_dataset
from augforge.errors import DataError
from augforge.models.ddpm import DDPMConfig, Denoiser, load_ddpm, sample_ddpm, save_ddpm, train_ddpm
from augforge.plugins import get_registry
from augforge.synthesis import HU_SCALE

SMALL = DDPMConfig(size=16, width=8, updates=60, batch_size=8, sample_steps=4, seed=0)


def discs(n: int = 24, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    m = (yy**2 + xx**2 <= rng.uniform(2, size / 3, n)[:, None, None] ** 2).astype(np.float32)
    return torch.from_numpy(m * 1.2 - 0.6)[:, None], torch.from_numpy(m)[:, None]


@pytest.fixture(scope="module")
def fitted():
    x, m = discs()
    return train_ddpm(x, m, SMALL, progress=False, log=lambda _m: None)


def test_the_denoiser_predicts_noise_of_the_patch_shape():
    net = Denoiser(8)
    out = net(torch.randn(3, 1, 16, 16), torch.zeros(3, 1, 16, 16), torch.tensor([1, 500, 1000]))
    assert out.shape == (3, 1, 16, 16)


def test_the_fit_learns_and_sampling_is_seeded(fitted):
    losses = [h["loss"] for h in fitted.history]
    assert losses[-1] < losses[0]
    masks = discs()[1][:6, 0].numpy() > 0
    a = sample_ddpm(fitted, masks, seed=1)
    assert a.shape == (6, 16, 16) and a.dtype == np.float32 and np.abs(a).max() <= 1
    assert np.array_equal(a, sample_ddpm(fitted, masks, seed=1))
    assert not np.array_equal(a, sample_ddpm(fitted, masks, seed=2))


def test_save_and_load_round_trip_and_a_changed_file_is_refused(fitted, tmp_path):
    path = tmp_path / "ddpm.pt"
    save_ddpm(fitted, path, {"k": 1})
    loaded, meta = load_ddpm(path)
    masks = discs()[1][:4, 0].numpy() > 0
    assert meta == {"k": 1} and np.array_equal(sample_ddpm(loaded, masks, seed=0), sample_ddpm(fitted, masks, seed=0))
    path.write_bytes(b"x" + path.read_bytes())
    with pytest.raises(DataError, match="checksum"):
        load_ddpm(path)


#: A small budget: the painted intensities are rough, but every label is a real outline.
BUDGET = {"gen.width": "8", "gen.epochs": "2"}


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(get_preset("tiny").data, progress=False)


def test_each_label_is_a_real_training_outline_turned_flipped_or_rescaled(tiny):
    ctx = PrepareContext.for_dataset(
        tiny,
        seed=0,
        preset=apply_overrides(get_preset("tiny"), BUDGET),
        cache_dir=cache_root() / "generators",
        log=lambda _m: None,
        progress=False,
    )
    strategy = get_registry().create("ddpm", {"ddpm": {"scale_min": 1.0, "scale_max": 1.0}})
    made = strategy.generate(list(tiny.train), ctx, 12)
    fitted = strategy.source(list(tiny.train), ctx, HU_SCALE)  # the fit generate made, from the cache
    assert made.info["cache_hit"] is False and fitted.cache_hit is True
    real = {
        np.ascontiguousarray(np.rot90(np.flip(m > 0, 1) if f else m > 0, k)).tobytes()
        for m in fitted.rois.mask
        for k in range(4)
        for f in (0, 1)
    }
    # Unscaled, every generated mask is one of the training outlines under a turn or a flip.
    assert all(m.tobytes() in real for m in made.patches_mask)
    assert len(made.slices) >= 10 and all(s.source == "synthetic:ddpm" and s.mask.any() for s in made.slices)


def test_the_strategy_is_sized_by_the_preset_and_runs_from_the_command_line(tmp_path):
    s = get_registry().create("ddpm")
    quick = s.fit_config(PrepareContext(seed=0, healthy=[], preset=get_preset("quick"), cache_dir=None))
    paper = s.fit_config(PrepareContext(seed=0, healthy=[], preset=get_preset("paper"), cache_dir=None))
    assert (quick.width, quick.updates, quick.batch_size, quick.sample_steps) == (16, 3000, 16, 10)
    assert (paper.size, paper.width, paper.updates, paper.sample_steps) == (64, 64, 15_000, 50)
    out = tmp_path / "gen"
    budget = [a for k, v in BUDGET.items() for a in ("--set", f"{k}={v}")]
    argv = ["generate", "--strategy", "ddpm", "--preset", "tiny", "--n", "6", "--out", str(out), "--no-progress"]
    assert main(argv + budget) == 0 and (out / "tumours.png").is_file()
    figure = tmp_path / "preview.png"
    argv = ["preview", "--strategy", "ddpm", "--preset", "tiny", "--n", "4", "--out", str(figure), "--no-progress"]
    assert main(argv + budget) == 0 and figure.is_file()
