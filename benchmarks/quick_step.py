"""Helper of the step benchmarks (bench_cpu_bf16.py, bench_allocator.py): one training step of the
quick preset's U-Net on one fixed, seeded batch, as a trial's loop takes it."""

from __future__ import annotations

from collections.abc import Callable

import torch

from augforge.config import get_preset
from augforge.models import build_model
from augforge.train.losses import get_loss


def quick_training_step() -> Callable[[bool], float]:
    """A function that runs one Adam step (bfloat16 autocast when its argument is true, the loss in
    float32) and returns the loss. Seeded: the same calls give the same losses in any process."""
    preset = get_preset("quick")
    cfg = preset.train
    torch.manual_seed(0)
    model = build_model(preset.model).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = get_loss(cfg.loss)
    shape = (cfg.batch_size, 1, cfg.patch_size, cfg.patch_size)
    x = torch.rand(shape).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(shape) > 0.9).float().contiguous(memory_format=torch.channels_last)

    def step(bf16: bool) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step
