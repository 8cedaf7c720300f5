"""The training loop: one function, read top to bottom."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from augforge.config import OPTIMIZERS, SCHEDULES, TrainConfig
from augforge.progress import bar as progress_bar
from augforge.seeding import deterministic, seed_everything
from augforge.strategy import Transform
from augforge.train.losses import get_loss
from augforge.train.sampling import BatchSampler, Prefetcher

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainResult", "make_optimizer", "make_schedule", "plan_steps", "train_model"]


@dataclass
class TrainResult:
    """What a training run did. Times in seconds."""

    steps: int
    steps_per_epoch: int
    batch_size: int
    final_loss: float  # mean loss over the last epoch
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    data_wait_seconds: float = 0.0  # time the loop sat waiting for the next batch

    @property
    def samples_per_second(self) -> float:
        return self.steps * self.batch_size / self.seconds if self.seconds > 0 else 0.0

    @property
    def data_wait_share(self) -> float:
        return self.data_wait_seconds / self.seconds if self.seconds > 0 else 0.0


def plan_steps(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    """(steps per epoch, total steps): ``train.steps_per_epoch``, or one pass over ``n_train`` slices."""
    per_epoch = cfg.steps_per_epoch if cfg.steps_per_epoch > 0 else math.ceil(n_train / cfg.batch_size)
    return per_epoch, per_epoch * cfg.epochs


def make_optimizer(params: Sequence[nn.Parameter] | object, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``train.optimizer``: "sgd" (the paper: lr 1e-2, momentum 0.9, weight decay 1e-4) or "adam"."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``train.schedule``: "constant" (the paper: None) or "cosine" (from ``train.lr`` down to 0 at the
    last step; stepped once per training step)."""
    if cfg.schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where ``train.cpu_amp`` pays."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _autocast(
    device: torch.device, enabled: bool, cpu: bool = False
) -> tuple[contextlib.AbstractContextManager, torch.amp.GradScaler | None]:
    """Mixed precision on CUDA (``enabled``): bfloat16 where supported (no loss scaling needed), else
    float16 with a gradient scaler. On a CPU, bfloat16 autocast when ``cpu`` (``train.cpu_amp``),
    else a no-op context (full float32)."""
    if device.type == "cpu" and cpu:
        return torch.autocast("cpu", dtype=torch.bfloat16), None
    if not (enabled and device.type == "cuda"):
        return contextlib.nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def train_model(
    model: nn.Module,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    cfg: TrainConfig,
    *,
    seed: int,
    transform: Transform | None = None,
    device: str = "cpu",
    progress: bool = True,
    description: str = "training",
) -> TrainResult:
    """Train ``model`` in place on slices and their masks under the budget of ``cfg``.

    images: (H, W) float32 in [0, 1] (preprocessed network inputs); masks: (H, W) uint8 {0, 1}.
    transform: the strategy's online augmentation, applied to each whole slice before cropping.
    The same ``seed``, data and config give the same weights on the same CPU.
    """
    # 1. Budget and seeds: everything random below derives from `seed`.
    steps_per_epoch, total_steps = plan_steps(cfg, len(images))
    seed_everything(seed)
    dev = torch.device(device)

    # 2. Model, optimiser, loss; channels-last suits oneDNN on CPU and tensor cores on GPU.
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(dev, memory_format=memory_format).train()
    optimizer = make_optimizer(model.parameters(), cfg)
    schedule = make_schedule(optimizer, cfg, total_steps)
    loss_fn = get_loss(cfg.loss)
    autocast, scaler = _autocast(dev, cfg.amp, cfg.cpu_amp)
    cpu_bf16 = dev.type == "cpu" and cfg.cpu_amp  # its loss is taken in float32

    # 3. Batches: a seeded stream built in a background thread while the network computes.
    sampler = BatchSampler(
        images,
        masks,
        batch_size=cfg.batch_size,
        steps=total_steps,
        seed=seed,
        patch_size=cfg.patch_size,
        fg_fraction=cfg.fg_fraction,
        transform=transform,
    )
    batches = Prefetcher(sampler, depth=3)

    # 4. The loop: forward, loss, backward, update; one progress line with step, loss and ETA.
    epoch_losses: list[float] = []
    running, in_epoch = 0.0, 0
    t_start = time.perf_counter()
    try:
        with (
            deterministic(),
            progress_bar(
                description,
                total_steps,
                enabled=progress,
                fields={"loss": float("nan")},
                columns=["loss {task.fields[loss]:.4f}"],
            ) as bar,
        ):
            for step, (x_np, y_np) in enumerate(batches, start=1):
                x = torch.from_numpy(x_np).to(dev, non_blocking=True).contiguous(memory_format=memory_format)
                y = torch.from_numpy(y_np).to(dev, non_blocking=True).contiguous(memory_format=memory_format)
                with autocast:
                    logits = model(x)
                loss = loss_fn(logits.float() if cpu_bf16 else logits, y)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                if schedule is not None:
                    schedule.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"training loss became {value} at step {step}; "
                        f"lower train.lr (now {cfg.lr}) or check the training data"
                    )
                running += value
                in_epoch += 1
                if in_epoch == steps_per_epoch or step == total_steps:
                    epoch_losses.append(running / in_epoch)
                    running, in_epoch = 0.0, 0
                bar.advance(loss=value)
    finally:
        batches.close()
    seconds = time.perf_counter() - t_start

    # 5. Summary of the run.
    return TrainResult(
        steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        batch_size=cfg.batch_size,
        final_loss=epoch_losses[-1] if epoch_losses else float("nan"),
        epoch_losses=epoch_losses,
        seconds=seconds,
        data_wait_seconds=batches.wait_seconds,
    )
