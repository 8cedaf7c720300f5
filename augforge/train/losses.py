"""Segmentation losses on logits. ``logits`` and ``target`` are (N, 1, H, W); target in {0, 1}."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "dice_bce_loss", "get_loss", "soft_dice_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The seed paper's soft Dice over the whole batch: 1 - (2 sum(p t) + eps) / (sum(p^2) + sum(t^2) + eps),
    with p = sigmoid(logits). Computed in float32 even under autocast (the sums are long)."""
    p = torch.sigmoid(logits.float())
    t = target.float()
    return 1.0 - (2.0 * (p * t).sum() + eps) / ((p * p).sum() + (t * t).sum() + eps)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy (per-pixel mean) plus the soft Dice: BCE gives useful gradients while the
    network still predicts nothing, Dice counters the tiny share of tumour pixels."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return bce + soft_dice_loss(logits, target)


LOSSES: dict[str, LossFn] = {"soft-dice": soft_dice_loss, "dice-bce": dice_bce_loss}


def get_loss(name: str) -> LossFn:
    """The loss called ``name`` (``train.loss``, one of :data:`augforge.config.LOSS_NAMES`)."""
    return LOSSES[name]
