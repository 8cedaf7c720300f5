"""Segmentation networks, built from the preset's ``model`` section."""

from __future__ import annotations

from torch import nn

from augforge.config import ARCHITECTURES, ModelConfig
from augforge.models.unet import UNet, VGG11UNet

__all__ = ["ARCHITECTURES", "UNet", "VGG11UNet", "build_model", "count_parameters", "downsampling_factor"]


def build_model(cfg: ModelConfig, in_channels: int = 1, classes: int = 1) -> nn.Module:
    """The network ``cfg`` describes, freshly initialised (seed torch before calling for repeatability).

    ``cfg`` holds checked values (:class:`~augforge.config.ModelConfig` checks them when they are set).
    """
    if cfg.arch == "unet":
        return UNet(
            in_channels, classes, base_width=cfg.base_width, depth=cfg.depth, bilinear=cfg.upsample == "bilinear"
        )
    return VGG11UNet(in_channels, classes, encoder_batchnorm=cfg.arch.endswith("-bn"))


def downsampling_factor(cfg: ModelConfig) -> int:
    """Total stride of the network's bottleneck: training patch sides must be multiples of it."""
    return cfg.downsampling_factor


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; BatchNorm running statistics are buffers, not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
