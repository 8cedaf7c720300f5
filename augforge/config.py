"""Presets: one typed, visible configuration per use (tests, CPU default, the paper's protocol).

Every field can be overridden by name with ``--set SECTION.FIELD=VALUE`` (``--set train.epochs=5``);
an unknown section or field is an error. Strategy parameters use the strategy's name as section
(``--set dcgan.epochs=50``); see :func:`split_overrides`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from augforge.errors import UsageError


@dataclass
class DataConfig:
    source: str = "lidc-phantom"  # dataset name or path (see `augforge data info`)
    size: int = 256  # slice side in pixels for generated data (the paper's slices are 512)
    n_train: int = 708  # training slices with a nodule (paper: 708)
    n_test: int = 264  # test slices (paper: 264, mix LR2 35, LR3 37, LR4A 97, LR4B 95)
    n_healthy: int = 400  # healthy (LR1) canvases for paste-in synthesis
    seed: int = 0  # dataset seed: fixed across trials, so trial seeds vary training only
    window: str = ""  # "LEVEL,WIDTH" in HU (e.g. "-600,1500"); empty = per-slice min-max (paper)
    clahe: bool = True  # CLAHE after normalisation, as in the paper
    # What the network sees, computed from the image alone: "whole" slice, or "lung" (the thresholded
    # lung field, the paper's hu_array). Measured on lidc-phantom, quick preset, baseline, seed 0 (264
    # test slices): whole 0.887 Dice, lung 0.754, lung grown by 10 mm 0.866 (docs/data.md).
    input: str = "whole"
    field_margin_mm: float = 0.0  # grow the lung field by this much before cutting (input "lung" only)
    consensus: int = 2  # multi-reader data: readers that must mark a pixel for the label (LIDC: 2 of 4)
    offset_px: int = 16  # LIDC per-slice crops: cut each crop at a random offset of up to this (docs/data.md)


#: Data settings that only shape one source's slices and labels. The source records them in its
#: dataset fingerprint (and meta), which is part of every trial's identity; they stay out of the trial's
#: settings so that a setting added for one source does not change the identity of trials on others.
DATASET_ONLY = ("consensus", "offset_px")
#: Settings added after trials were first recorded, with the value that reproduces what trials did
#: before them: at that value a setting stays out of a trial's identity (earlier results still count),
#: at any other it enters it.
ADDED_LATER: dict[tuple[str, str], Any] = {("train", "subsample"): "slices"}


@dataclass
class ModelConfig:
    arch: str = "unet"  # "unet" (plain, width set below) or "unet-vgg11" (the paper's, ~18.25M)
    base_width: int = 16  # channels of the first level; doubles per level (plain U-Net only)
    depth: int = 4  # number of down-sampling steps (plain U-Net only)
    upsample: str = "bilinear"  # "bilinear" (+1x1 conv) or "transposed" (2x2 up-convolution); plain U-Net only


@dataclass
class TrainConfig:
    epochs: int = 40  # passes over the training set (or steps_per_epoch steps each)
    steps_per_epoch: int = 0  # 0 = one pass over the training set per epoch
    batch_size: int = 6
    optimizer: str = "sgd"  # "sgd" (paper) or "adam"
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "constant"  # learning rate over the run: "constant" (paper) or "cosine" (decays to 0)
    loss: str = "soft-dice"  # "soft-dice" (paper) or "dice-bce"
    patch_size: int = 0  # 0 = train on whole slices; >0 = square patches of this side
    fg_fraction: float = 0.33  # share of patches centred on tumour (nnU-Net's oversampling)
    threshold: float = 0.5  # sigmoid >= threshold is tumour
    amp: bool = True  # mixed precision (CUDA only)
    channels_last: bool = True
    eval_batch_size: int = 16
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    # What a train fraction < 1 samples: "slices" (stratified by class) or whole "patients" (stratified
    # by their most severe class; every slice of a drawn patient). Data with many slices per nodule
    # (the LIDC per-slice export) needs "patients": its slices of one nodule are near copies.
    subsample: str = "slices"


@dataclass
class GeneratorConfig:
    """Budget of offline generators (DCGAN): strategies read it unless their own params override."""

    epochs: int = 300  # paper: 300
    batch_size: int = 128  # paper: 128
    width: int = 64  # base width; the paper's G is 512-256-128-64, i.e. width 64
    latent_dim: int = 128  # paper: 128
    roi_size: int = 64  # side of the tumour patches the generator learns (paper: 64)
    sample_every: int = 0  # write a sample grid every N epochs (0 = only at the end)


@dataclass
class Preset:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gen: GeneratorConfig = field(default_factory=GeneratorConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def trial_settings(self) -> dict[str, Any]:
        """The settings that identify a trial: all of them but :data:`DATASET_ONLY`, which reach the
        trial through the dataset fingerprint, and :data:`ADDED_LATER` at their earlier behaviour."""
        out = self.to_dict()
        out["data"] = {k: v for k, v in out["data"].items() if k not in DATASET_ONLY}
        for (section, name), value in ADDED_LATER.items():
            if out[section].get(name) == value:
                del out[section][name]
        return out


SECTIONS = ("data", "model", "train", "gen")


def _tiny() -> Preset:
    return Preset(
        name="tiny",
        data=DataConfig(size=64, n_train=24, n_test=12, n_healthy=12),
        model=ModelConfig(base_width=8, depth=2),
        # Adam + Dice-BCE learn the tiny phantom's whole slices in seconds (Dice 0.34-0.67 over seeds
        # 0-2 for none and flip), so tests see real, non-empty predictions; one thread: tiny
        # convolutions gain nothing from more, and tests share the machine.
        train=TrainConfig(
            epochs=15,
            batch_size=4,
            optimizer="adam",
            lr=1e-2,
            loss="dice-bce",
            eval_batch_size=12,
            patch_size=0,
            threads=1,
        ),
        gen=GeneratorConfig(epochs=1, batch_size=16, width=4, latent_dim=16, roi_size=32),
    )


def _quick() -> Preset:
    return Preset(
        name="quick",
        data=DataConfig(size=256),
        # Sized for a 2-core CPU (10 GFLOP per step). Chosen on the phantom (88 test slices, seed 0,
        # with the earlier lung input that carried the mask; not re-measured since): width 8 beat
        # width 16 at 400 steps (Dice 0.87 vs 0.82) with a quarter of the FLOPs, and a cosine decay
        # over 600 steps beat a constant rate (0.90 vs 0.82).
        model=ModelConfig(base_width=8, depth=4),
        train=TrainConfig(
            epochs=15,
            steps_per_epoch=40,
            batch_size=16,
            optimizer="adam",
            lr=2e-3,
            schedule="cosine",
            loss="dice-bce",
            patch_size=96,
            fg_fraction=0.5,
        ),
        # ~1,300 steps of batch 32: about a minute on 2 CPU cores (more steps beat bigger batches here).
        gen=GeneratorConfig(epochs=60, batch_size=32, width=16, latent_dim=64, roi_size=32),
    )


def _paper() -> Preset:
    return Preset(
        name="paper",
        data=DataConfig(size=512, input="lung"),  # the paper's lung-only hu_array
        model=ModelConfig(arch="unet-vgg11"),
        train=TrainConfig(
            epochs=40, batch_size=6, lr=1e-2, momentum=0.9, weight_decay=1e-4, loss="soft-dice", patch_size=0
        ),
        gen=GeneratorConfig(epochs=300, batch_size=128, width=64, latent_dim=128, roi_size=64),
    )


PRESETS = {"tiny": _tiny, "quick": _quick, "paper": _paper}
DEFAULT_PRESET = "quick"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def _field_type(section_cls: type, fname: str) -> type:
    hints = typing.get_type_hints(section_cls)
    t = hints[fname]
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def apply_overrides(preset: Preset, overrides: dict[str, Any]) -> Preset:
    """Return a copy of ``preset`` with ``{"train.epochs": "5", ...}`` applied and type-checked."""
    from augforge.strategy import Param

    out = copy.deepcopy(preset)
    for key, value in overrides.items():
        section, _, fname = key.partition(".")
        if section not in SECTIONS or not fname:
            raise UsageError(f"--set {key}: expected SECTION.FIELD with SECTION one of {', '.join(SECTIONS)}")
        obj = getattr(out, section)
        names = [f.name for f in dataclasses.fields(obj)]
        if fname not in names:
            close = difflib.get_close_matches(fname, names, n=1)
            hint = f" (did you mean {section}.{close[0]}?)" if close else f" (known: {', '.join(names)})"
            raise UsageError(f"--set {key}: {section} has no field {fname!r}{hint}")
        t = _field_type(type(obj), fname)
        setattr(obj, fname, Param(fname, t, getattr(obj, fname)).coerce(value, strategy=section))
    return out


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``["train.epochs=5", "dcgan.ratio=0.5"]`` -> ``{"train.epochs": "5", ...}``."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or "." not in key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE with KEY like train.epochs or dcgan.ratio")
        out[key] = value.strip()
    return out


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split ``--set`` items into preset fields and per-strategy parameters (keyed by strategy)."""
    preset_part: dict[str, Any] = {}
    strategy_part: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, _, fname = key.partition(".")
        if section in SECTIONS:
            preset_part[key] = value
        else:
            strategy_part.setdefault(section, {})[fname] = value
    return preset_part, strategy_part
