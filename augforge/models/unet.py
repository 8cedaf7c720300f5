"""U-Net segmentation networks for 2-D CT slices: one input channel (the preprocessed slice in [0, 1]),
one output channel (tumour logits).

References
----------
- O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
  Segmentation", MICCAI 2015: contracting path of 3x3 convolutions and 2x2 max pooling, expanding
  path that up-samples, concatenates the skip connection of the same scale and convolves again.
- The seed paper's protocol (``reference/PAPER_PROTOCOL.md``): a U-Net with a VGG11 encoder built as
  ``segmentation_models_pytorch.Unet(encoder_name="vgg11", in_channels=1, classes=1)``, which has
  18,252,881 parameters; trained with SGD lr 1e-2, momentum 0.9, weight decay 1e-4, batch 6, 40
  epochs, soft-Dice loss; prediction = sigmoid >= 0.5. ImageNet weights are not used here.

Two networks:

``UNet``        the plain Ronneberger layout with BatchNorm, width ``base_width * 2**level`` and
                ``depth`` down-sampling steps; bilinear or transposed-convolution up-sampling. The
                narrow configurations (``base_width`` 8-16) are the CPU models of the ``quick`` preset.
``VGG11UNet``   the paper's network, layer for layer: VGG11 configuration "A" encoder (convolutions
                with bias and ReLU, no BatchNorm unless ``encoder_batchnorm``), a centre block at
                stride 32, and five decoder blocks of nearest up-sampling + two conv-BN-ReLU with
                widths 256-128-64-32-16, then a 3x3 head. With ``encoder_batchnorm=False`` it has exactly
                18,252,881 parameters, the paper's figure; with BatchNorm (VGG11-BN) 18,258,385.

Both accept any input size: the input is padded (edge replication) to a multiple of the total
down-sampling factor and the output is cropped back, so a 250x250 slice works as well as 256x256.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet", "VGG11UNet"]


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> BN -> ReLU) twice. (N, c_in, H, W) -> (N, c_out, H, W)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(*_conv_bn_relu(c_in, c_out), *_conv_bn_relu(c_out, c_out))


class _Up(nn.Module):
    """Up-sample by 2, halve the channels, concatenate the skip, DoubleConv.

    x: (N, c_in, h, w), skip: (N, c_in // 2, 2h, 2w) -> (N, c_out, 2h, 2w).
    """

    def __init__(self, c_in: int, c_out: int, bilinear: bool):
        super().__init__()
        if bilinear:
            # A 1x1 conv after interpolation keeps the decoder's widths equal to the transposed variant.
            self.up: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(c_in, c_in // 2, 1, bias=False),
            )
        else:
            self.up = nn.ConvTranspose2d(c_in, c_in // 2, 2, stride=2)
        self.conv = DoubleConv(c_in, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) on the bottom/right so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class UNet(nn.Module):
    """Plain U-Net.

    Args:
        in_channels: input channels (1 for a CT slice).
        classes:     output channels (1: tumour logit).
        base_width:  channels of the first level; level ``i`` has ``base_width * 2**i``.
        depth:       number of 2x down-sampling steps (the bottleneck is at stride ``2**depth``).
        bilinear:    bilinear up-sampling (+1x1 conv) instead of 2x2 transposed convolutions.

    forward: (N, in_channels, H, W) float -> (N, classes, H, W) logits.
    """

    def __init__(
        self, in_channels: int = 1, classes: int = 1, base_width: int = 16, depth: int = 4, bilinear: bool = True
    ):
        super().__init__()
        if depth < 1 or base_width < 1:
            raise ValueError(f"UNet needs depth >= 1 and base_width >= 1, got {depth=} {base_width=}")
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.stride = 2**depth
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1])) for i in range(depth)
        )
        self.ups = nn.ModuleList(_Up(widths[i + 1], widths[i], bilinear) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = _pad_to_multiple(x, self.stride)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)[..., :h, :w]


#: VGG11 configuration "A" (Simonyan & Zisserman 2015): conv widths, "M" = 2x2 max pooling.
_VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11UNet(nn.Module):
    """U-Net with a VGG11 encoder, laid out as segmentation_models_pytorch's ``Unet("vgg11")``.

    Encoder feature maps (channels @ stride): 64@1, 128@2, 256@4, 512@8, 512@16, 512@32. The stride-1
    map is not used as a skip (as in smp); the decoder has a centre block at stride 32 and five blocks
    (nearest up-sampling, concatenation, two conv-BN-ReLU) of widths ``decoder_widths``.

    forward: (N, in_channels, H, W) float -> (N, classes, H, W) logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 1,
        encoder_batchnorm: bool = False,
        decoder_widths: tuple[int, ...] = (256, 128, 64, 32, 16),
    ):
        super().__init__()
        self.stride = 32
        # Split the VGG feature list into stages at each max pooling, as smp's VGG encoder does.
        stages: list[list[nn.Module]] = [[]]
        c = in_channels
        for item in _VGG11_CFG:
            if item == "M":
                stages.append([nn.MaxPool2d(2)])
                continue
            stages[-1].append(nn.Conv2d(c, int(item), 3, padding=1))
            if encoder_batchnorm:
                stages[-1].append(nn.BatchNorm2d(int(item)))
            stages[-1].append(nn.ReLU(inplace=True))
            c = int(item)
        self.encoder = nn.ModuleList(nn.Sequential(*s) for s in stages)
        enc_channels = [64, 128, 256, 512, 512, 512]
        head = enc_channels[-1]
        self.center = DoubleConv(head, head)
        # Skips from deep to shallow (strides 16, 8, 4, 2); the last block up-samples without one.
        skip_channels = [*enc_channels[1:-1][::-1], 0]
        in_widths = [head, *decoder_widths[:-1]]
        self.decoder = nn.ModuleList(
            DoubleConv(cin + cskip, cout) for cin, cskip, cout in zip(in_widths, skip_channels, decoder_widths)
        )
        self.head = nn.Conv2d(decoder_widths[-1], classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = _pad_to_multiple(x, self.stride)
        feats = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        # feats: strides 1, 2, 4, 8, 16, 32; skips are strides 16, 8, 4, 2 (deep to shallow).
        skips = feats[1:-1][::-1]
        y = self.center(feats[-1])
        for i, block in enumerate(self.decoder):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            if i < len(skips):
                y = torch.cat([y, skips[i]], dim=1)
            y = block(y)
        return self.head(y)[..., :h, :w]
