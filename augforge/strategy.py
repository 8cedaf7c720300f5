"""The strategy contract: what an augmentation strategy is, its parameters, and how strategies compose.

A strategy may do two things, both optional:

1. ``prepare(train, ctx) -> train`` -- offline, once per trial: fit a generator on the training split
   (and the healthy canvases in ``ctx``) and return an expanded training set. It never sees the
   test split.
2. ``build_transform(seed) -> Transform | None`` -- online: a callable applied to every training
   sample, ``(image, mask) -> (image, mask)``, where ``image`` is the preprocessed network input
   (float32, [0, 1]) and ``mask`` is uint8 {0, 1}, both (H, W).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from augforge import seeding
from augforge.errors import UsageError
from augforge.settings import Param

if TYPE_CHECKING:
    from augforge.config import Preset
    from augforge.data.records import Dataset, Slice

__all__ = ["ComposedTransform", "Composite", "Param", "PrepareContext", "Strategy", "Transform"]

#: The baseline strategy's name: no augmentation, the reference every other strategy is compared with.
BASELINE = "none"


@runtime_checkable
class Transform(Protocol):
    """An online, per-sample augmentation with its own seeded random state.

    image: (H, W) float32 in [0, 1]; mask: (H, W) uint8 in {0, 1}. Returns both, same shapes and types.
    """

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ComposedTransform:
    """Applies transforms one after another (the online half of a composite strategy)."""

    def __init__(self, parts: list[Transform]):
        self.parts = parts

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for t in self.parts:
            image, mask = t(image, mask)
        return image, mask

    def to_dict(self) -> dict[str, Any]:
        return {"composed": [describe_transform(t) for t in self.parts]}


def describe_transform(t: Transform | None) -> Any:
    """A JSON-able description of a transform: its ``to_dict()`` when it has one, else its class."""
    if t is None:
        return None
    to_dict = getattr(t, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return {"class": f"{type(t).__module__}.{type(t).__qualname__}"}


@dataclass
class PrepareContext:
    """What ``Strategy.prepare`` receives besides the training split.

    seed:      the trial's seed; derive all randomness from it.
    healthy:   healthy (LR1) slices to paste synthetic tumours into; never test slices.
    preset:    the trial's preset (``preset.gen`` sizes offline generators to the machine).
    cache_dir: a folder where a strategy may cache fitted generators between trials.
    device:    "cpu" or "cuda".
    log:       print a line for the user (goes to the console and the run log).
    progress:  whether to show progress bars.
    dataset_fingerprint: identifies the dataset the training split came from (for cache keys).
    intensity: the dataset's intensity scale: "HU", or one without units such as "8-bit" (a strategy
               that assumes Hounsfield units either adapts, see :mod:`augforge.synthesis.intensity`,
               or sets ``needs_hu``).
    """

    seed: int
    healthy: list[Slice]
    preset: Preset
    cache_dir: Path
    device: str = "cpu"
    log: Callable[[str], None] = print
    progress: bool = True
    dataset_fingerprint: str = ""
    intensity: str = "HU"

    @classmethod
    def for_dataset(cls, dataset: Dataset, **values: Any) -> PrepareContext:
        """The context for a training split of ``dataset``: its healthy slices, fingerprint and intensity
        scale, and ``values`` (``seed``, ``preset``, ``cache_dir``, ...) for the rest."""
        return cls(
            healthy=list(dataset.healthy),
            dataset_fingerprint=dataset.fingerprint,
            intensity=str(dataset.meta.get("intensity", "HU")),
            **values,
        )


class Strategy:
    """Base class of every augmentation strategy.

    Subclasses set ``name`` (unique, lower-case, no '+'), ``description`` (one line) and ``params``,
    and override ``prepare`` and/or ``build_transform``. Parameter values are validated on
    construction and available as ``self.config`` (a dict) and ``self.p`` (attribute access).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    needs_gpu: ClassVar[bool] = False
    #: True when the strategy works in Hounsfield units (tumour patches, placement by HU, healthy
    #: canvases): ``augforge bench`` refuses it on data without HU (e.g. 8-bit crops) before any trial.
    needs_hu: ClassVar[bool] = False

    def __init__(self, **values: Any):
        self.config: dict[str, Any] = resolve_params(type(self), values)

    @property
    def p(self) -> _Namespace:
        return _Namespace(self.config)

    # -- the two optional halves -------------------------------------------------------------
    def prepare(self, train: list[Slice], ctx: PrepareContext) -> list[Slice]:
        """Return the (possibly expanded) training set. Default: unchanged."""
        return list(train)

    def build_transform(self, seed: int) -> Transform | None:
        """Return the per-sample online transform seeded with ``seed``, or None for none."""
        return None

    # -- introspection -------------------------------------------------------------------------
    @property
    def has_prepare(self) -> bool:
        return type(self).prepare is not Strategy.prepare

    @property
    def label(self) -> str:
        """How the strategy is written on the command line."""
        return self.name

    def describe(self) -> dict[str, Any]:
        """What a trial records about this strategy: name, parameter values, the exact transforms."""
        return {
            "name": self.name,
            "params": dict(self.config),
            "transform": describe_transform(self.build_transform(0)),
        }

    def key(self) -> str:
        """A short hash of ``describe()``: same strategy and parameters, same key."""
        blob = json.dumps(self.describe(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"


class _Namespace:
    def __init__(self, d: dict[str, Any]):
        self.__dict__.update(d)


def resolve_params(cls: type[Strategy], values: dict[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``values``; an unknown key or a wrong type is a UsageError."""
    by_name = {p.name: p for p in cls.params}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        known = ", ".join(by_name) or "none"
        raise UsageError(f"strategy {cls.name!r} has no parameter {unknown[0]!r} (known: {known})")
    out: dict[str, Any] = {}
    for p in cls.params:
        out[p.name] = p.coerce(values[p.name], strategy=cls.name) if p.name in values else p.default
    return out


def check_strategy_class(cls: Any) -> str | None:
    """Return what is wrong with a registered strategy class, or None when it is valid."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        return f"registered {cls!r}, which is not a subclass of augforge.Strategy"
    if not isinstance(cls.name, str) or not cls.name:
        return f"strategy class {cls.__qualname__} has no name"
    if "+" in cls.name or cls.name.strip() != cls.name or cls.name.lower() != cls.name:
        return f"strategy name {cls.name!r} must be lower-case, without '+' or spaces"
    if not isinstance(cls.description, str) or not cls.description.strip():
        return f"strategy {cls.name!r} has no description"
    if not isinstance(cls.params, tuple) or not all(isinstance(p, Param) for p in cls.params):
        return f"strategy {cls.name!r}: params must be a tuple of augforge.Param"
    seen: set[str] = set()
    for p in cls.params:
        if p.name in seen:
            return f"strategy {cls.name!r} declares parameter {p.name!r} twice"
        seen.add(p.name)
        problem = p.check_declaration()
        if problem:
            return f"strategy {cls.name!r}: {problem}"
    return None


class Composite(Strategy):
    """Strategies applied together: offline ``prepare`` steps chained in order, online transforms
    composed in order. Written ``a+b`` on the command line."""

    name = "composite"
    description = "Several strategies applied in order."

    def __init__(self, parts: list[Strategy]):
        if len(parts) < 2:
            raise UsageError("a composite strategy needs at least two parts, e.g. dcgan+affine")
        names = [p.name for p in parts]
        if len(set(names)) != len(names):
            raise UsageError(f"strategy {'+'.join(names)!r} names a part twice")
        if BASELINE in names:
            raise UsageError(f"{BASELINE!r} cannot be part of a composite strategy: it is the baseline")
        self.parts = list(parts)
        self.name = "+".join(names)  # type: ignore[misc]
        self.config = {p.name: dict(p.config) for p in parts}

    @property
    def label(self) -> str:  # type: ignore[override]
        return "+".join(p.label for p in self.parts)

    @property
    def has_prepare(self) -> bool:  # type: ignore[override]
        return any(p.has_prepare for p in self.parts)

    @property
    def needs_gpu(self) -> bool:  # type: ignore[override]
        return any(p.needs_gpu for p in self.parts)

    @property
    def needs_hu(self) -> bool:  # type: ignore[override]
        return any(p.needs_hu for p in self.parts)

    def prepare(self, train: list[Slice], ctx: PrepareContext) -> list[Slice]:
        for part in self.parts:
            train = part.prepare(train, ctx)
        return train

    def build_transform(self, seed: int) -> Transform | None:
        # Each part gets its own seed stream, so adding a part does not change the others' draws.
        ts = [p.build_transform(seeding.part_seed(seed, i)) for i, p in enumerate(self.parts)]
        ts = [t for t in ts if t is not None]
        if not ts:
            return None
        return ts[0] if len(ts) == 1 else ComposedTransform(ts)

    def describe(self) -> dict[str, Any]:
        return {"name": self.label, "parts": [p.describe() for p in self.parts]}
