"""Training: batches (patches, foreground oversampling, order), the prefetcher, losses, the loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augforge.config import ModelConfig, TrainConfig
from augforge.errors import UsageError
from augforge.models import build_model
from augforge.train import dice_bce_loss, plan_steps, soft_dice_loss, train_model
from augforge.train.evaluate import predict_masks
from augforge.train.sampling import BatchSampler, Prefetcher, crop_patch


def blobs(n: int = 12, size: int = 32, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Bright discs on a noisy dark background: learnable in a few dozen steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.integers(6, size - 6, 2)
        r = rng.integers(2, 5)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        img = np.clip(0.2 + 0.6 * m + rng.normal(0, 0.05, m.shape), 0, 1).astype(np.float32)
        images.append(img)
        masks.append(m)
    return images, masks


def test_crop_patch_centres_on_tumour_when_asked():
    mask = np.zeros((64, 64), np.uint8)
    mask[50:53, 5:8] = 1
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    rng = np.random.default_rng(1)
    for _ in range(20):
        img_p, m_p = crop_patch(image, mask, 16, rng, foreground=True)
        assert img_p.shape == m_p.shape == (16, 16)
        assert m_p.any()  # the jitter is at most a quarter patch: the tumour pixel stays inside
    small = crop_patch(image[:10, :12], mask[:10, :12], 16, rng, foreground=False)
    assert small[0].shape == (16, 16)  # padded up to the patch side


def test_foreground_oversampling_share():
    images, masks = blobs(20, 64)
    sampler = BatchSampler(images, masks, batch_size=8, steps=30, seed=0, patch_size=16, fg_fraction=0.5)
    with_tumour = np.array([[y[k].any() for k in range(8)] for _, y in sampler])
    assert with_tumour[:, 4:].all()  # the last round(8 * 0.5) samples are centred on tumour
    assert with_tumour[:, :4].mean() < 0.6  # the others are placed uniformly: often empty


def test_batches_depend_only_on_the_seed():
    images, masks = blobs()

    def run(seed):
        rng = np.random.default_rng(seed + 100)

        def flip(image, mask):
            return (image[:, ::-1], mask[:, ::-1]) if rng.random() < 0.5 else (image, mask)

        s = BatchSampler(
            images, masks, batch_size=5, steps=6, seed=seed, patch_size=16, fg_fraction=0.4, transform=flip
        )
        return [x for x, _ in Prefetcher(s)]

    a, b, c = run(3), run(3), run(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # Every slice is visited once per epoch (12 slices, batches of 5: the first 12 samples).
    s = BatchSampler(images, masks, batch_size=4, steps=3, seed=0)
    seen = [tuple(x[k, 0, :2, :2].ravel()) for x, _ in s for k in range(4)]
    assert len(set(seen)) == 12


def test_prefetcher_reraises_producer_errors_and_counts_waiting():
    def items():
        yield 1
        raise RuntimeError("transform exploded")

    pf = Prefetcher(items())
    with pytest.raises(RuntimeError, match="transform exploded"):
        list(pf)
    assert pf.wait_seconds >= 0.0


def test_losses_known_values():
    logits = torch.full((1, 1, 2, 2), 50.0)  # sigmoid ~ 1 everywhere
    target = torch.ones(1, 1, 2, 2)
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(-logits, target).item() == pytest.approx(1.0, abs=1e-5)
    assert dice_bce_loss(logits, target).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(UsageError, match="train.loss: 'focal' is not one of soft-dice, dice-bce"):
        TrainConfig(loss="focal")


def test_plan_steps():
    assert plan_steps(TrainConfig(epochs=3, batch_size=4, steps_per_epoch=0), 10) == (3, 9)
    assert plan_steps(TrainConfig(epochs=2, steps_per_epoch=7), 10) == (7, 14)
    with pytest.raises(UsageError, match="train.epochs: 0 is below the minimum 1"):
        TrainConfig(epochs=0)


def _tiny_train(seed: int, **cfg_changes) -> tuple[torch.nn.Module, object]:
    images, masks = blobs()
    settings = {"epochs": 8, "batch_size": 4, "optimizer": "adam", "lr": 1e-2, "loss": "dice-bce", "threads": 1}
    cfg = TrainConfig(**{**settings, **cfg_changes})
    torch.manual_seed(seed)
    model = build_model(ModelConfig(base_width=4, depth=2))
    result = train_model(model, images, masks, cfg, seed=seed, progress=False)
    return model, result


def test_training_learns_and_is_deterministic():
    m1, r1 = _tiny_train(0)
    m2, _ = _tiny_train(0)
    assert r1.steps == 24 and len(r1.epoch_losses) == 8
    assert r1.epoch_losses[-1] < r1.epoch_losses[0]
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    images, _ = blobs(6, seed=1)
    pred = predict_masks(m1, images, batch_size=4)
    assert all(p.shape == (32, 32) and p.dtype == bool for p in pred)
    assert sum(p.sum() for p in pred) > 0


def test_patch_size_and_optimizer_are_validated():
    with pytest.raises(UsageError, match="train.optimizer: 'rmsprop' is not one of sgd, adam"):
        _tiny_train(0, optimizer="rmsprop")
    with pytest.raises(UsageError, match="train.patch_size: -1 is below the minimum 0"):
        _tiny_train(0, patch_size=-1)


def test_a_diverging_loss_stops_training():
    with pytest.raises(FloatingPointError, match="training loss became"):
        _tiny_train(0, optimizer="sgd", lr=1e30)


def test_cosine_schedule_decays_to_zero_and_unknown_is_an_error():
    from augforge.train import make_schedule

    model = torch.nn.Linear(2, 1)
    cfg = TrainConfig(optimizer="sgd", lr=0.1, schedule="cosine")
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    sched = make_schedule(opt, cfg, total_steps=10)
    rates = []
    for _ in range(10):
        opt.step()
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    assert rates[4] == pytest.approx(0.05) and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert make_schedule(opt, TrainConfig(schedule="constant"), 10) is None
    with pytest.raises(UsageError, match="train.schedule: 'step' is not one of constant, cosine"):
        TrainConfig(schedule="step")
