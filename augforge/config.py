"""Presets: one typed, visible configuration per use (tests, CPU default, the paper's protocol).

Every field can be overridden by name with ``--set SECTION.FIELD=VALUE`` (``--set train.epochs=5``);
an unknown section or field is an error. Strategy parameters use the strategy's name as section
(``--set dcgan.epochs=50``); see :func:`split_overrides`.

Each field is declared with its rule (:func:`augforge.settings.setting`), and a section converts and
checks every value as it is set: a preset, an override from ``--set`` or a study file, and a section
built in Python all pass the same rules, once, and code downstream takes the values as given.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from augforge.errors import UsageError
from augforge.settings import Section, setting

# -- the choices a setting offers (the modules that act on them import them from here) ------------
#: ``data.input``: what the network sees of a slice (docs/data.md).
INPUTS: tuple[str, ...] = ("whole", "lung")
#: ``data.window`` names and their (level, width) in HU.
NAMED_WINDOWS: dict[str, tuple[float, float]] = {"lung": (-600.0, 1500.0), "mediastinum": (40.0, 400.0)}
#: ``model.arch`` values and what they build (:func:`augforge.models.build_model`).
ARCHITECTURES: dict[str, str] = {
    "unet": "plain U-Net with BatchNorm; width model.base_width, model.depth down-sampling steps",
    "unet-vgg11": "the paper's U-Net with a VGG11 encoder (18,252,881 parameters)",
    "unet-vgg11-bn": "the same with BatchNorm in the encoder (VGG11-BN, 18,258,385 parameters)",
}
UPSAMPLING: tuple[str, ...] = ("bilinear", "transposed")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
SCHEDULES: tuple[str, ...] = ("constant", "cosine")
#: ``train.loss`` names (:data:`augforge.train.losses.LOSSES` implements each).
LOSS_NAMES: tuple[str, ...] = ("soft-dice", "dice-bce")
SUBSAMPLING: tuple[str, ...] = ("slices", "patients")
#: ``gen.roi_size``: a power of two, so the generator's up-sampling reaches it exactly.
ROI_SIZES: tuple[int, ...] = (8, 16, 32, 64, 128, 256)


@functools.lru_cache(maxsize=32)
def parse_window(window: str) -> tuple[float, float] | None:
    """``data.window``: ``""`` -> None (per-slice min-max); ``"lung"`` or ``"-600,1500"`` -> (level, width) in HU."""
    text = window.strip().lower()
    if not text:
        return None
    if text in NAMED_WINDOWS:
        return NAMED_WINDOWS[text]
    try:
        level, width = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(
            f"data.window {window!r}: expected LEVEL,WIDTH in HU (e.g. -600,1500) or "
            f"one of {', '.join(NAMED_WINDOWS)}; empty for per-slice min-max"
        ) from None
    if not width > 0:
        raise UsageError(f"data.window {window!r}: the width must be positive")
    return level, width


@dataclass
class DataConfig(Section):
    section: ClassVar[str] = "data"

    source: str = setting("lidc-phantom")  # dataset name or path (see `augforge data info`)
    size: int = setting(256, low=16)  # slice side in pixels for generated data (the paper's slices are 512)
    n_train: int = setting(708, low=1)  # training slices with a nodule (paper: 708)
    n_test: int = setting(264, low=1)  # test slices (paper: 264, mix LR2 35, LR3 37, LR4A 97, LR4B 95)
    n_healthy: int = setting(400, low=0)  # healthy (LR1) canvases for paste-in synthesis
    seed: int = setting(0, low=0)  # dataset seed: fixed across trials, so trial seeds vary training only
    window: str = setting("")  # "LEVEL,WIDTH" in HU (e.g. "-600,1500"); empty = per-slice min-max (paper)
    clahe: bool = setting(True)  # CLAHE after normalisation, as in the paper
    # What the network sees, computed from the image alone: "whole" slice, or "lung" (the thresholded
    # lung field, the paper's hu_array). Measured on lidc-phantom, quick preset, baseline, seed 0 (264
    # test slices): whole 0.887 Dice, lung 0.754, lung grown by 10 mm 0.866 (docs/data.md).
    input: str = setting("whole", choices=INPUTS)
    # grow the lung field by this much before cutting (input "lung" only)
    field_margin_mm: float = setting(0.0, low=0.0)
    # multi-reader data: readers that must mark a pixel for the label (LIDC: 2 of 4)
    consensus: int = setting(2, low=1)
    # LIDC per-slice crops: cut each crop at a random offset of up to this (docs/data.md)
    offset_px: int = setting(16, low=0)
    # lidc-phantom's imaging model: "v4" (one simulated scanner) or "ct" (CT physics at a training and
    # a held-out site; docs/data.md, "Simulated CT physics"; the quick preset's default)
    physics: str = setting("v4", choices=("v4", "ct"))

    def check(self) -> None:
        parse_window(self.window)


#: Data settings that only shape one source's slices and labels. The source records them in its
#: dataset fingerprint (and meta), which is part of every trial's identity; they stay out of the trial's
#: settings so that a setting added for one source does not change the identity of trials on others.
DATASET_ONLY = ("consensus", "offset_px", "physics")
#: Settings added after trials were first recorded, with the value that reproduces what trials did
#: before them: at that value a setting stays out of a trial's identity (earlier results still count),
#: at any other it enters it.
ADDED_LATER: dict[tuple[str, str], Any] = {("train", "subsample"): "slices", ("train", "cpu_amp"): False}


@dataclass
class ModelConfig(Section):
    section: ClassVar[str] = "model"

    # "unet" (plain, width set below) or "unet-vgg11" (the paper's, ~18.25M)
    arch: str = setting("unet", choices=ARCHITECTURES)
    base_width: int = setting(16, low=1)  # channels of the first level; doubles per level (plain U-Net only)
    depth: int = setting(4, "down-sampling steps of the plain U-Net", low=1, high=7)
    # "bilinear" (+1x1 conv) or "transposed" (2x2 up-convolution); plain U-Net only
    upsample: str = setting("bilinear", choices=UPSAMPLING)

    @property
    def downsampling_factor(self) -> int:
        """Total stride of the network's bottleneck: training patch sides must be multiples of it."""
        return 2**self.depth if self.arch == "unet" else 32


@dataclass
class TrainConfig(Section):
    section: ClassVar[str] = "train"

    epochs: int = setting(40, low=1)  # passes over the training set (or steps_per_epoch steps each)
    steps_per_epoch: int = setting(0, low=0)  # 0 = one pass over the training set per epoch
    batch_size: int = setting(6, low=1)
    optimizer: str = setting("sgd", choices=OPTIMIZERS)  # "sgd" (paper) or "adam"
    lr: float = setting(1e-2, "a positive learning rate, e.g. 1e-3", low=0.0, bounds="(]")
    momentum: float = setting(0.9, "SGD momentum", low=0.0, high=1.0, bounds="[)")
    weight_decay: float = setting(1e-4, low=0.0)
    # learning rate over the run: "constant" (paper) or "cosine" (decays to 0)
    schedule: str = setting("constant", choices=SCHEDULES)
    loss: str = setting("soft-dice", choices=LOSS_NAMES)  # "soft-dice" (paper) or "dice-bce"
    patch_size: int = setting(0, "0 = whole slices; >0 = square patches of this side", low=0)
    fg_fraction: float = setting(0.33, "share of patches centred on tumour", low=0.0, high=1.0)  # as nnU-Net
    threshold: float = setting(0.5, "sigmoid >= threshold is tumour", low=0.0, high=1.0, bounds="()")
    amp: bool = setting(True)  # mixed precision (CUDA only)
    # bfloat16 autocast on a CPU, training and scoring: other numbers than float32 (a setting of its
    # own, keyed apart); pays only where the CPU has bfloat16 instructions (AVX512-BF16, AMX).
    cpu_amp: bool = setting(False)
    channels_last: bool = setting(True)
    eval_batch_size: int = setting(16, low=1)
    threads: int = setting(0, "torch intra-op threads; 0 = torch's default", low=0)
    # What a train fraction < 1 samples: "slices" (stratified by class) or whole "patients" (stratified
    # by their most severe class; every slice of a drawn patient). Data with many slices per nodule
    # (the LIDC per-slice export) needs "patients": its slices of one nodule are near copies.
    subsample: str = setting("slices", choices=SUBSAMPLING)


@dataclass
class GeneratorConfig(Section):
    """Budget of offline generators (DCGAN): strategies read it unless their own params override."""

    section: ClassVar[str] = "gen"

    epochs: int = setting(300, low=1)  # paper: 300
    batch_size: int = setting(128, low=1)  # paper: 128
    width: int = setting(64, low=1)  # base width; the paper's G is 512-256-128-64, i.e. width 64
    latent_dim: int = setting(128, low=1)  # paper: 128
    # side of the tumour patches the generator learns (paper: 64)
    roi_size: int = setting(64, "a power of two: the side of the generated tumour patches", choices=ROI_SIZES)
    sample_every: int = setting(0, low=0)  # write a sample grid every N epochs (0 = only at the end)


@dataclass
class Preset:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gen: GeneratorConfig = field(default_factory=GeneratorConfig)

    def __post_init__(self) -> None:
        """The rule between sections: training patches fit the network's down-sampling."""
        factor = self.model.downsampling_factor
        if self.train.patch_size % factor:
            raise UsageError(
                f"train.patch_size: {self.train.patch_size} is not a multiple of {factor}, the network's "
                "down-sampling factor; use 0 (whole slices) or a multiple of it"
            )

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
            epochs=15, batch_size=4, optimizer="adam", lr=1e-2, loss="dice-bce", eval_batch_size=12, threads=1
        ),
        gen=GeneratorConfig(epochs=1, batch_size=16, width=4, latent_dim=16, roi_size=32),
    )


def _quick() -> Preset:
    return Preset(
        name="quick",
        # CT physics at two sites: calibrated with the baseline and controls only, all six checks
        # met at ct_version 12 (docs/data.md); "v4" gives the single-scanner data of earlier results.
        data=DataConfig(size=256, physics="ct"),
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


def _fast() -> Preset:
    """``quick``'s network, data and generators, trained for studies of many trials on a CPU: one
    thread per trial (so that a trial's numbers do not depend on the machine's core count, and trials
    run side by side, one per core, with ``--executor process``), 64 px patches and 480 steps.
    Chosen on the phantom's baseline (three seeds, two one-thread trials at a time, 2026-12-01):
    96 px and 600 steps (``quick``'s training) 0.502 in 116-128 s per trial; 64 px and 600 steps 0.497
    in 84 s; 64 px and 480 steps 0.472 in 57-60 s, the one that fits the default study's 48 trials in
    30 minutes on 2 cores with a margin (27.0 min measured; docs/performance.md, "A preset for studies")."""
    quick = _quick()
    return Preset(
        name="fast",
        data=quick.data,
        model=quick.model,
        train=dataclasses.replace(quick.train, epochs=12, patch_size=64, threads=1),
        gen=quick.gen,
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


PRESETS = {"tiny": _tiny, "quick": _quick, "fast": _fast, "paper": _paper}
DEFAULT_PRESET = "quick"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def apply_overrides(preset: Preset, overrides: dict[str, Any]) -> Preset:
    """A copy of ``preset`` with ``{"train.epochs": "5", ...}`` applied. Values are strings (``--set``)
    or typed values (a study file); each section converts and checks its own (:class:`~augforge.settings.Section`)."""
    changes: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, _, fname = key.partition(".")
        if section not in SECTIONS or not fname:
            raise UsageError(f"--set {key}: expected SECTION.FIELD with SECTION one of {', '.join(SECTIONS)}")
        names = [f.name for f in dataclasses.fields(getattr(preset, section))]
        if fname not in names:
            close = difflib.get_close_matches(fname, names, n=1)
            hint = f" (did you mean {section}.{close[0]}?)" if close else f" (known: {', '.join(names)})"
            raise UsageError(f"--set {key}: {section} has no field {fname!r}{hint}")
        changes.setdefault(section, {})[fname] = value
    sections = {name: dataclasses.replace(getattr(preset, name), **values) for name, values in changes.items()}
    return dataclasses.replace(copy.deepcopy(preset), **sections)


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
