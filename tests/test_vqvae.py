"""The VQ-VAE and its PixelCNN prior (augforge.models.vqvae) and the `vqvae` strategy."""

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
from augforge.models.vqvae import VQVAE, GatedPixelCNN, VQVAEConfig, load_vqvae, sample_vqvae, save_vqvae, train_vqvae
from augforge.plugins import get_registry

SMALL = VQVAEConfig(
    size=16, width=16, res_width=8, res_layers=1, codes=16, code_dim=8, steps=200, batch_size=16,
    lr=2e-3, prior_width=16, prior_layers=3, prior_steps=80, seed=0,
)  # fmt: skip


def discs(n: int = 48, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Bright discs of random radius on a dark background in [-1, 1], with the disc as channel 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    r = rng.uniform(2, size / 3, n)[:, None, None]
    m = (yy**2 + xx**2 <= r**2).astype(np.float32)
    return torch.from_numpy(np.stack([m * 1.4 - 0.7, m * 2 - 1], axis=1).astype(np.float32))


# -- the networks ---------------------------------------------------------------------------------
def test_the_prior_predicts_each_code_from_those_before_it_only():
    torch.manual_seed(0)
    prior = GatedPixelCNN(codes=10, dim=8, layers=4).eval().requires_grad_(False)
    idx = torch.randint(0, 10, (1, 6, 6))
    base = prior(idx)
    for p in [(0, 0), (2, 3), (5, 5), (3, 0)]:
        changed = idx.clone()
        changed[0, p[0], p[1]] = (changed[0, p[0], p[1]] + 1) % 10
        diff = (prior(changed) - base).abs().amax(dim=1)[0]  # (6, 6): which positions' logits moved
        for i in range(6):
            for j in range(6):
                if (i, j) <= p:  # at or before the changed code in raster order: unaffected
                    assert diff[i, j] == 0, (p, (i, j))
        after = [(i, j) for i in range(6) for j in range(6) if (i, j) > p]
        if after:  # and it is used: some later position depends on it
            assert max(float(diff[q]) for q in after) > 0, p


def test_the_codebook_quantises_to_the_nearest_code_with_straight_through_gradients():
    torch.manual_seed(1)
    model = VQVAE(SMALL)
    z = torch.randn(2, SMALL.code_dim, 4, 4, requires_grad=True)
    q, idx, loss = model.quantise(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, SMALL.code_dim)
    nearest = torch.cdist(flat, model.codebook.weight.detach()).argmin(1)
    assert torch.equal(idx.reshape(-1), nearest)
    assert torch.allclose(q.detach(), model.codebook.weight[idx].permute(0, 3, 1, 2).detach(), atol=1e-6)
    q.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))  # the decoder's gradient passes to the encoder
    assert loss.item() > 0


# -- the fit --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    return train_vqvae(discs(), SMALL, progress=False, log=lambda m: None)


def test_the_fit_learns_and_is_repeatable(fitted):
    recon = [h["recon"] for h in fitted.history if "recon" in h]
    assert recon[-1] < 0.5 * recon[0]  # reconstruction improves
    nll = [h["prior_nll"] for h in fitted.history if "prior_nll" in h]
    assert nll[-1] < np.log(SMALL.codes)  # the prior beats a uniform guess over the codes
    again = train_vqvae(discs(), SMALL, progress=False, log=lambda m: None)
    for a, b in zip(fitted.vqvae.state_dict().values(), again.vqvae.state_dict().values()):
        assert torch.equal(a, b)


def test_samples_are_new_discs_with_their_masks(fitted):
    x = sample_vqvae(fitted, 64, seed=3)
    assert x.shape == (64, 2, 16, 16) and x.dtype == np.float32 and np.abs(x).max() <= 1.0
    assert np.array_equal(x, sample_vqvae(fitted, 64, seed=3))
    assert not np.array_equal(x, sample_vqvae(fitted, 64, seed=4))
    mask = x[:, 1] > 0
    bright = x[:, 0] > 0
    agree = (mask == bright).mean()
    assert agree > 0.85  # the generated mask covers the generated bright disc
    assert len({m.tobytes() for m in mask}) > 8  # not one sample repeated


def test_save_and_load_give_the_same_samples_and_a_changed_file_is_refused(fitted, tmp_path):
    path = tmp_path / "vq.pt"
    save_vqvae(fitted, path, {"note": "x"})
    loaded, meta = load_vqvae(path)
    assert meta == {"note": "x"} and loaded.config == fitted.config
    assert np.array_equal(sample_vqvae(loaded, 8, seed=1), sample_vqvae(fitted, 8, seed=1))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="checksum"):
        load_vqvae(path)


# -- the strategy ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return load_dataset(get_preset("tiny").data, progress=False)


def test_the_strategy_is_sized_by_the_preset_and_faithful_in_the_paper_preset():
    s = get_registry().create("vqvae")
    ctx = PrepareContext(seed=0, healthy=[], preset=get_preset("paper"), cache_dir=None)
    paper = s.fit_config(ctx)
    # The notebooks' VQ-VAE: 64x64 patches, width 256 (residual 32), 512 codes of 64, 15,000 updates of
    # batch 16, and a 10-layer Gated PixelCNN of width 256 trained 31 epochs of 36 batches (~1,100 updates).
    assert (paper.size, paper.width, paper.res_width, paper.codes, paper.code_dim) == (64, 256, 32, 512, 64)
    assert (paper.steps, paper.batch_size, paper.prior_width, paper.prior_layers, paper.prior_steps) == (
        15_000, 16, 256, 10, 1_100,
    )  # fmt: skip
    quick = s.fit_config(PrepareContext(seed=0, healthy=[], preset=get_preset("quick"), cache_dir=None))
    assert (quick.size, quick.width, quick.codes, quick.code_dim, quick.steps) == (32, 32, 64, 8, 3000)
    assert get_registry().create("vqvae", {"vqvae": {"steps": 7, "codes": 9}}).fit_config(ctx).steps == 7


#: The tiny preset's generator budget learns nothing from 24 tumours; this one does in ~15 s. The
#: strategy test and both commands share its fit through the generator cache.
BUDGET = {"gen.width": "16", "gen.epochs": "10"}


def test_the_strategy_adds_labelled_slices_and_reuses_its_fit(tiny):
    logs: list[str] = []
    ctx = PrepareContext.for_dataset(
        tiny,
        seed=0,
        preset=apply_overrides(get_preset("tiny"), BUDGET),
        cache_dir=cache_root() / "generators",
        log=logs.append,
        progress=False,
    )
    train = list(tiny.train)
    out = get_registry().create("vqvae").prepare(train, ctx)
    added = out[len(train) :]
    assert len(added) > 0.6 * len(train)  # ratio 1: most samples are tumours and find a place
    assert all(s.source == "synthetic:vqvae" and s.mask.any() and s.image is None for s in added)
    assert {s.provenance["canvas"] for s in added} <= {s.id for s in tiny.healthy}
    again = get_registry().create("vqvae").generate(train, ctx, 4)
    assert again.info["cache_hit"] is True and any("reusing generator" in m for m in logs)
    assert again.patches_hu.shape == (4, 32, 32) and again.patches_mask.dtype == bool


def test_generate_and_preview_commands_run_it(tmp_path):
    budget = [a for k, v in BUDGET.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "gen"
    argv = ["generate", "--strategy", "vqvae", "--preset", "tiny", "--n", "6", "--out", str(out), "--no-progress"]
    assert main(argv + budget) == 0
    assert (out / "tumours.png").is_file() and len(list((out / "masks").glob("*.npy"))) >= 4
    figure = tmp_path / "preview.png"
    argv = ["preview", "--strategy", "vqvae", "--preset", "tiny", "--n", "4", "--out", str(figure), "--no-progress"]
    assert main(argv + budget) == 0
    assert figure.is_file() and figure.stat().st_size > 1000
