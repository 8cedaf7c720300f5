"""The validation layer: every setting is converted and checked once, where it enters."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from augforge.config import (
    ARCHITECTURES,
    LOSS_NAMES,
    OPTIMIZERS,
    SCHEDULES,
    DataConfig,
    GeneratorConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    get_preset,
)
from augforge.errors import UsageError
from augforge.models import build_model
from augforge.settings import Param, Section
from augforge.train.loop import make_optimizer, make_schedule
from augforge.train.losses import LOSSES

SECTIONS: list[type[Section]] = [DataConfig, ModelConfig, TrainConfig, GeneratorConfig]


def _bad_values(p: Param) -> list[object]:
    """Values that break ``p``'s rule: the wrong type, and each bound or choice crossed."""
    wrong_type = {bool: "maybe", int: "many", float: "a lot", str: 3}[p.type]
    out: list[object] = [wrong_type]
    if p.choices is not None:
        out.append("no-such-choice" if p.type is str else -12345)
    if p.low is not None:
        out.append(p.low if p.bounds[0] == "(" else p.low - 1)
    if p.high is not None:
        out.append(p.high if p.bounds[1] == ")" else p.high + 1)
    return out


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.section)
def test_every_setting_refuses_a_bad_value_in_one_line_naming_it(section):
    params = section.params()
    assert {p.name for p in params} == {f.name for f in dataclasses.fields(section)}  # every field has a rule
    for p in params:
        assert p.check_declaration() is None, p
        for bad in _bad_values(p):
            with pytest.raises(UsageError) as info:
                section(**{p.name: bad})
            message = str(info.value)
            assert f"{section.section}.{p.name}" in message and "\n" not in message, message


def test_values_are_converted_at_construction_assignment_and_replace():
    cfg = TrainConfig(epochs="7", lr="1e-3", amp="off", optimizer="ADAM")
    assert (cfg.epochs, cfg.lr, cfg.amp, cfg.optimizer) == (7, 1e-3, False, "adam")
    cfg.batch_size = "12"
    assert cfg.batch_size == 12
    with pytest.raises(UsageError, match="train.batch_size: 0 is below the minimum 1"):
        cfg.batch_size = 0
    assert cfg.batch_size == 12  # a refused value leaves the setting as it was
    with pytest.raises(UsageError, match="train.momentum: 1.0 is outside \\[0, 1\\)"):
        dataclasses.replace(cfg, momentum=1)
    with pytest.raises(UsageError, match="train.lr: nan is not a finite number"):
        TrainConfig(lr="nan")
    with pytest.raises(UsageError, match="data.window '-600': expected LEVEL,WIDTH"):
        DataConfig(window="-600")


def test_the_rule_between_sections_is_checked_when_a_preset_is_made():
    quick = get_preset("quick")
    assert quick.train.patch_size % quick.model.downsampling_factor == 0
    with pytest.raises(UsageError, match="train.patch_size: 100 is not a multiple of 16"):
        apply_overrides(quick, {"train.patch_size": "100"})
    # A deeper network makes the preset's own patch size (96) wrong: caught too, naming the patch.
    with pytest.raises(UsageError, match="train.patch_size: 96 is not a multiple of 64"):
        apply_overrides(quick, {"model.depth": "6"})
    assert apply_overrides(quick, {"model.depth": "5", "train.patch_size": 64}).train.patch_size == 64


def test_the_choices_a_setting_offers_are_the_ones_the_code_implements():
    assert set(LOSS_NAMES) == set(LOSSES)
    model = torch.nn.Linear(2, 1)
    kinds = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
    assert set(OPTIMIZERS) == set(kinds)
    for name in OPTIMIZERS:
        assert isinstance(make_optimizer(model.parameters(), TrainConfig(optimizer=name)), kinds[name])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert [type(make_schedule(opt, TrainConfig(schedule=s), 10)).__name__ for s in SCHEDULES] == [
        "NoneType",
        "CosineAnnealingLR",
    ]
    for arch in ARCHITECTURES:
        expected = "UNet" if arch == "unet" else "VGG11UNet"
        assert type(build_model(ModelConfig(arch=arch, depth=2))).__name__ == expected


def test_param_bounds_and_strict_typing():
    p = Param("share", float, 0.5, low=0.0, high=1.0, bounds="(]")
    assert p.coerce("1", strategy="s") == 1.0
    with pytest.raises(UsageError, match="s.share: 0.0 is outside \\(0, 1\\]"):
        p.coerce(0, strategy="s")
    # A typed source (a study file's own keys): a string is not a number, a boolean not an integer.
    with pytest.raises(UsageError, match="s.share: expected a number, got str '0.5'"):
        p.coerce("0.5", strategy="s", strict=True)
    with pytest.raises(UsageError, match="s.n: expected an integer, got the boolean true"):
        Param("n", int, 1).coerce(True, strategy="s", strict=True)
    assert Param("n", int, 1).coerce(3, strategy="s", strict=True) == 3
    assert Param("share", float, 0.5, bounds="<>").check_declaration() is not None
