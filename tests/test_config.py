"""Presets and --set overrides."""

from __future__ import annotations

import pytest

from augforge.config import PRESETS, apply_overrides, get_preset, parse_set_options, split_overrides
from augforge.errors import UsageError


def test_presets_exist_and_paper_matches_protocol():
    assert set(PRESETS) == {"tiny", "quick", "fast", "paper"}
    paper = get_preset("paper")
    assert paper.data.size == 512 and paper.model.arch == "unet-vgg11"
    assert (paper.train.epochs, paper.train.batch_size, paper.train.lr) == (40, 6, 1e-2)
    assert (paper.train.momentum, paper.train.weight_decay, paper.train.loss) == (0.9, 1e-4, "soft-dice")
    assert (paper.gen.epochs, paper.gen.batch_size, paper.gen.latent_dim, paper.gen.roi_size) == (300, 128, 128, 64)


def test_fast_is_quicks_setup_with_a_cheaper_training_on_one_thread():
    quick, fast = get_preset("quick"), get_preset("fast")
    assert (fast.data, fast.model, fast.gen) == (quick.data, quick.model, quick.gen)
    changed = {k: (getattr(quick.train, k), v) for k, v in vars(fast.train).items() if getattr(quick.train, k) != v}
    assert changed == {"epochs": (15, 12), "patch_size": (96, 64), "threads": (0, 1)}
    assert fast.train.epochs * fast.train.steps_per_epoch == 480
    # Its own identity: a fast trial is never read back as a quick one, or the reverse.
    assert fast.trial_settings() != quick.trial_settings() and fast.name != quick.name


def test_overrides_are_typed_and_do_not_touch_the_original():
    base = get_preset("tiny")
    out = apply_overrides(
        base, {"train.epochs": "7", "train.lr": "0.5", "data.clahe": "false", "data.window": "-600,1500"}
    )
    assert (out.train.epochs, out.train.lr, out.data.clahe, out.data.window) == (7, 0.5, False, "-600,1500")
    assert base.train.epochs != 7 or base.train.lr != 0.5


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"train.epoch": "3"}, "train has no field 'epoch' (did you mean train.epochs?)"),
        ({"trian.epochs": "3"}, "expected SECTION.FIELD with SECTION one of data, model, train, gen"),
        ({"train.epochs": "three"}, "train.epochs: expected an integer, got 'three'"),
        ({"data.clahe": "maybe"}, "data.clahe: expected true or false"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides, fragment):
    with pytest.raises(UsageError) as info:
        apply_overrides(get_preset("quick"), overrides)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_unknown_preset():
    with pytest.raises(UsageError, match="unknown preset 'turbo'; choose one of: tiny, quick, fast, paper"):
        get_preset("turbo")


def test_set_options_split_between_preset_and_strategies():
    items = parse_set_options(["train.epochs=5", "dcgan.ratio = 0.5", "affine.p=1"])
    preset, strategies = split_overrides(items)
    assert preset == {"train.epochs": "5"}
    assert strategies == {"dcgan": {"ratio": "0.5"}, "affine": {"p": "1"}}
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_set_options(["epochs"])
