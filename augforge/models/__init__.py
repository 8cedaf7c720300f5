"""Segmentation networks, built from the preset's ``model`` section."""

from __future__ import annotations

from torch import nn

from augforge.config import ModelConfig
from augforge.errors import UsageError
from augforge.models.unet import UNet, VGG11UNet

__all__ = ["ARCHITECTURES", "UNet", "VGG11UNet", "build_model", "count_parameters", "downsampling_factor"]

#: ``model.arch`` values and what they build.
ARCHITECTURES: dict[str, str] = {
    "unet": "plain U-Net with BatchNorm; width model.base_width, model.depth down-sampling steps",
    "unet-vgg11": "the paper's U-Net with a VGG11 encoder (18,252,881 parameters)",
    "unet-vgg11-bn": "the same with BatchNorm in the encoder (VGG11-BN, 18,258,385 parameters)",
}

_UPSAMPLE = ("bilinear", "transposed")


def build_model(cfg: ModelConfig, in_channels: int = 1, classes: int = 1) -> nn.Module:
    """The network ``cfg`` describes, freshly initialised (seed torch before calling for repeatability).

    Raises UsageError naming the ``model.*`` key when a value is out of range.
    """
    if cfg.arch == "unet":
        if cfg.upsample not in _UPSAMPLE:
            raise UsageError(f"model.upsample={cfg.upsample!r}: choose one of {', '.join(_UPSAMPLE)}")
        if not 1 <= cfg.depth <= 7:
            raise UsageError(f"model.depth={cfg.depth}: choose 1 to 7 down-sampling steps")
        if cfg.base_width < 1:
            raise UsageError(f"model.base_width={cfg.base_width}: must be at least 1")
        return UNet(
            in_channels, classes, base_width=cfg.base_width, depth=cfg.depth, bilinear=cfg.upsample == "bilinear"
        )
    if cfg.arch in ("unet-vgg11", "unet-vgg11-bn"):
        return VGG11UNet(in_channels, classes, encoder_batchnorm=cfg.arch.endswith("-bn"))
    raise UsageError(f"model.arch={cfg.arch!r}: choose one of {', '.join(ARCHITECTURES)}")


def downsampling_factor(cfg: ModelConfig) -> int:
    """Total stride of the network's bottleneck: training patch sides must be multiples of it."""
    return 2**cfg.depth if cfg.arch == "unet" else 32


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; BatchNorm running statistics are buffers, not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
