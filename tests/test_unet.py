"""The U-Nets: the paper's parameter count, shapes for any input size, configuration errors."""

from __future__ import annotations

import pytest
import torch

from augforge.config import ModelConfig
from augforge.errors import UsageError
from augforge.models import build_model, count_parameters, downsampling_factor
from augforge.models.unet import UNet, VGG11UNet


def test_vgg11_unet_has_the_papers_parameter_count():
    # segmentation_models_pytorch.Unet("vgg11", in_channels=1, classes=1): 18,252,881 (PAPER_PROTOCOL.md)
    assert count_parameters(build_model(ModelConfig(arch="unet-vgg11"))) == 18_252_881
    # VGG11-BN adds a scale and a shift per encoder channel: 2 * (64+128+256+256+4*512) = 5,504.
    assert count_parameters(build_model(ModelConfig(arch="unet-vgg11-bn"))) == 18_252_881 + 5_504


@pytest.mark.parametrize("shape", [(64, 64), (33, 97)])
def test_vgg11_unet_keeps_any_input_size(shape):
    model = VGG11UNet().eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 1, *shape))
    assert out.shape == (2, 1, *shape)


@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize("shape", [(32, 32), (45, 38)])
def test_plain_unet_shapes_and_gradients(bilinear, shape):
    model = UNet(1, 1, base_width=4, depth=3, bilinear=bilinear)
    x = torch.rand(3, 1, *shape).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    out = model(x)
    assert out.shape == (3, 1, *shape)
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_plain_unet_width_and_depth_set_the_size():
    small = count_parameters(build_model(ModelConfig(base_width=4, depth=2)))
    wider = count_parameters(build_model(ModelConfig(base_width=8, depth=2)))
    deeper = count_parameters(build_model(ModelConfig(base_width=4, depth=3)))
    assert small < wider and small < deeper
    # Convolution weights scale with width squared: doubling the width roughly quadruples the count.
    assert 3.5 < wider / small < 4.1
    assert downsampling_factor(ModelConfig(depth=3)) == 8
    assert downsampling_factor(ModelConfig(arch="unet-vgg11")) == 32


def test_same_seed_same_initial_weights():
    torch.manual_seed(3)
    a = build_model(ModelConfig(base_width=4, depth=2)).state_dict()
    torch.manual_seed(3)
    b = build_model(ModelConfig(base_width=4, depth=2)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"arch": "resnet"}, "model.arch: 'resnet' is not one of unet, unet-vgg11, unet-vgg11-bn"),
        ({"upsample": "nearest"}, "model.upsample: 'nearest' is not one of bilinear, transposed"),
        ({"depth": 0}, "model.depth: 0 is outside [1, 7]"),
        ({"base_width": 0}, "model.base_width: 0 is below the minimum 1"),
    ],
)
def test_bad_model_settings_are_usage_errors_before_a_network_is_built(values, fragment):
    with pytest.raises(UsageError) as info:
        ModelConfig(**values)
    assert fragment in str(info.value)
