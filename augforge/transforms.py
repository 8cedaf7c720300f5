"""Albumentations pipelines as augforge transforms, and a base class for strategies built on them.

A plugin author writes the albumentations pipeline; augforge adds what a benchmark needs:

- **Independent, seeded random streams.** albumentations 2.0's ``Compose(seed=s)`` gives *every*
  transform in the pipeline the same seed, so two ops with the same probability fire together
  (``HorizontalFlip(p=.5)`` + ``VerticalFlip(p=.5)`` yields only "neither" or "both") and their
  random parameters are correlated. :class:`AlbumentationsTransform` gives each transform its own
  stream, spawned from the seed with :class:`numpy.random.SeedSequence`: same seed, same samples.
- **Masks by nearest neighbour**, always, so a mask stays binary and aligned with the image.
- **The [0, 1] contract.** The input must be the preprocessed image in [0, 1], never Hounsfield
  units: albumentations clips float images to [0, 1] after its pixel ops, which would turn a raw HU
  slice into a black-and-white mask. The first sample is checked and a wrong one is refused with a
  message; cubic/Lanczos resampling, which can overshoot, is clipped back into [0, 1].
- **A record of what ran**: ``to_dict()`` is ``albumentations.to_dict`` of the pipeline, stored in
  the trial config; :meth:`AlbumentationsTransform.from_dict` rebuilds it.

albumentations (which imports torch) is imported on first use, not when a plugin module is loaded,
so that ``augforge strategies`` stays fast.

Example (a whole third-party strategy)::

    from augforge import Param, hookimpl
    from augforge.transforms import AlbumentationsStrategy, load_albumentations

    class Blur(AlbumentationsStrategy):
        name = "blur"
        description = "Gaussian blur of the [0, 1] image."
        params = (Param("p", float, 0.3, "probability per sample", low=0.0, high=1.0),)

        def pipeline(self):
            A = load_albumentations()
            return [A.GaussianBlur(sigma_limit=(0.5, 1.5), p=self.p.p)]

    @hookimpl
    def register_strategies(register):
        register(Blur)
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from augforge import seeding
from augforge.errors import DataError, UsageError
from augforge.strategy import Strategy

if TYPE_CHECKING:
    import albumentations as A

    PipelineLike = A.BaseCompose | Sequence[A.BasicTransform | A.BaseCompose]

__all__ = ["AlbumentationsStrategy", "AlbumentationsTransform", "load_albumentations", "seed_pipeline"]

#: Values this far outside [0, 1] in an input image mean it is not the preprocessed image.
_RANGE_TOLERANCE = 1e-3


def load_albumentations() -> ModuleType:
    """Import and return the ``albumentations`` module.

    Turns off its update check first: otherwise every import (every trial, every worker) makes an
    HTTP request to PyPI, which stalls on machines without internet access. A user who set
    ``NO_ALBUMENTATIONS_UPDATE`` keeps their value.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def seed_pipeline(pipeline: A.BaseCompose | A.BasicTransform, seed: int) -> None:
    """Give ``pipeline`` and every transform inside it its own random stream derived from ``seed``.

    Streams come from ``numpy.random.SeedSequence(seed).spawn``, one per node of the pipeline tree
    (in order), so they are statistically independent and the same seed reproduces every draw.
    Negative seeds are taken modulo 2**64.
    """
    _seed_node(pipeline, seeding.sequence(seed))


def _seed_node(node: Any, seq: np.random.SeedSequence) -> None:
    A = load_albumentations()
    children = list(node.transforms) if isinstance(node, A.BaseCompose) else []
    np_seq, py_seq, *child_seqs = seq.spawn(2 + len(children))
    py_seed = int(py_seq.generate_state(1, np.uint64)[0])
    # On a compose this also hands the same state to every child; each child is re-seeded below.
    node.set_random_state(np.random.default_rng(np_seq), random.Random(py_seed))
    for child, child_seq in zip(children, child_seqs):
        _seed_node(child, child_seq)


def _may_overshoot(node: Any) -> bool:
    """Whether any transform resamples the image with a kernel that can leave [0, 1] (cubic, Lanczos).

    Only the geometric ``interpolation`` counts: ``Downscale`` (the one op with an
    ``interpolation_pair``) resamples an 8-bit copy, which saturates instead of overshooting.
    """
    import cv2

    if getattr(node, "interpolation", None) in {cv2.INTER_CUBIC, cv2.INTER_LANCZOS4}:
        return True
    return any(_may_overshoot(t) for t in getattr(node, "transforms", ()))


def _what(x: Any) -> str:
    return f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__


def _check_sample(image: Any, mask: Any) -> None:
    """Refuse an input that is not a preprocessed (image, mask) pair, saying what was wrong."""
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.float32:
        raise DataError(f"augmentation input: expected the image as a float32 (H, W) array, got a {_what(image)}")
    if not isinstance(mask, np.ndarray) or mask.shape != image.shape or mask.dtype != np.uint8:
        raise DataError(
            f"augmentation input: expected the mask as a uint8 array of shape {image.shape}, got a {_what(mask)}"
        )
    if not np.isfinite(image).all():
        raise DataError("augmentation input: the image contains NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
        raise DataError(
            f"augmentation input: image values span [{lo:.4g}, {hi:.4g}], but online transforms take the "
            "preprocessed image in [0, 1] (Slice.image), not Hounsfield units"
        )
    if mask.max(initial=0) > 1:
        raise DataError(f"augmentation input: mask values go up to {int(mask.max())}; expected 0 and 1")


class AlbumentationsTransform:
    """An albumentations pipeline as an augforge :class:`~augforge.Transform`.

    pipeline: an ``albumentations.Compose`` (used as is: re-seeded, masks set to nearest) or a
              sequence of transforms (wrapped in a ``Compose``).
    seed:     the seed of this transform's random streams; the same seed gives the same outputs,
              sample for sample.

    Calling it with ``image`` (H, W) float32 in [0, 1] and ``mask`` (H, W) uint8 in {0, 1} returns
    the augmented pair, same shapes and dtypes, the image in [0, 1]. The inputs are not modified.
    """

    def __init__(self, pipeline: PipelineLike, seed: int):
        A = load_albumentations()
        import cv2

        if isinstance(pipeline, A.Compose):
            compose = pipeline
        elif isinstance(pipeline, (A.BaseCompose, A.BasicTransform)):
            compose = A.Compose([pipeline])
        elif isinstance(pipeline, Sequence) and all(isinstance(t, (A.BasicTransform, A.BaseCompose)) for t in pipeline):
            compose = A.Compose(list(pipeline))
        else:
            raise UsageError(
                f"AlbumentationsTransform: expected an albumentations Compose or a list of albumentations "
                f"transforms, got {type(pipeline).__name__}"
            )
        # A mask interpolated by anything but nearest neighbour gets fractional or shifted edges.
        compose.set_mask_interpolation(cv2.INTER_NEAREST)
        seed_pipeline(compose, seed)
        self.pipeline = compose
        self.seed = int(seed)
        self._clip = _may_overshoot(compose)
        self._checked = False

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self._checked:
            # Inputs come from one data pipeline: a slice in HU instead of [0, 1] is wrong from the
            # first sample on. Checking every sample would cost more than a flip does (256x256:
            # 44 us against 20 us, benchmarks/bench_transforms.py).
            _check_sample(image, mask)
            self._checked = True
        out = self.pipeline(image=image, mask=mask)
        augmented = out["image"]
        if self._clip and augmented is not image:  # the input itself is in [0, 1] (checked)
            # in place unless the result is a view of the caller's array, which must stay as it was
            in_place = not np.may_share_memory(augmented, image)
            augmented = np.clip(augmented, 0.0, 1.0, out=augmented if in_place else None)
        return augmented, out["mask"]

    def to_dict(self) -> dict[str, Any]:
        """The pipeline as ``albumentations.to_dict`` writes it (class names, every argument, version)."""
        A = load_albumentations()
        return {"albumentations": A.to_dict(self.pipeline)}

    @classmethod
    def from_dict(cls, description: dict[str, Any], seed: int) -> AlbumentationsTransform:
        """Rebuild a transform from :meth:`to_dict`'s output (e.g. a trial record) with a seed."""
        if not isinstance(description, dict) or "albumentations" not in description:
            raise UsageError(
                "AlbumentationsTransform.from_dict: expected a dict with an 'albumentations' key, as to_dict() writes"
            )
        A = load_albumentations()
        return cls(A.from_dict(description["albumentations"]), seed=seed)

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.pipeline.transforms)
        return f"AlbumentationsTransform([{names}], seed={self.seed})"


class AlbumentationsStrategy(Strategy):
    """A strategy whose online half is an albumentations pipeline built from its parameters.

    Subclasses set ``name``, ``description`` and ``params`` as for any :class:`~augforge.Strategy`
    and define :meth:`pipeline`. ``build_transform(seed)`` wraps the pipeline in an
    :class:`AlbumentationsTransform`; an empty pipeline means no online transform.
    """

    def pipeline(self) -> list[Any]:
        """The albumentations transforms for the current parameters (``self.p``), in order."""
        raise TypeError(f"strategy {self.name!r} ({type(self).__qualname__}) does not define pipeline()")

    def build_transform(self, seed: int) -> AlbumentationsTransform | None:
        ops = self.pipeline()
        if not ops:
            return None
        return AlbumentationsTransform(ops, seed=seed)
