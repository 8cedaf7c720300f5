"""Seeds and deterministic execution: the same trial twice on the same CPU gives the same numbers.

Every random draw in augforge comes from the trial's one integer seed, in one of these ways:

- :func:`stream` ``(seed, *keys)``: a NumPy generator for one purpose. The keys separate purposes
  (a constant per purpose, below or in the plugin that draws) and items (a slice's index). Streams
  with different keys are independent, so adding a draw to one purpose leaves the others alone.
- :func:`part_seed` ``(seed, index)``: the seed of the index-th part of a composite strategy.
- :func:`sequence` ``(seed)``: a NumPy seed sequence whose ``spawn`` gives independent children,
  for trees of random objects (an albumentations pipeline: one child per node).
- :func:`torch_generator` ``(seed)``: a torch generator for draws made with torch.
- :func:`seed_everything` ``(seed)``: the global generators (Python's, NumPy's, torch's), for code
  that draws from them (weight initialisation, dropout).

A key's value is part of the results: changing one changes every trial that draws from it.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["deterministic", "part_seed", "seed_everything", "sequence", "stream", "torch_generator", "torch_threads"]

#: Stream keys of the core's purposes (plugins keep their own, e.g. ``copy-paste``'s 0xC0B7).
SUBSAMPLE = 0xF2AC  # which training slices or patients a train fraction keeps
PATCH_POSITIONS = 2**31 - 1  # where training patches are cut (an epoch's order: stream(seed, epoch))
PHANTOM_SPLITS = {"train": 1, "test": 2, "healthy": 3}  # a phantom slice: stream(seed, split, index)
PHANTOM_FRACTIONS = 7  # the phantom's part-solid core fractions
PHANTOM_PATIENTS = 0  # the phantom's patient-level draws
PHANTOM_CT = 8  # lidc-phantom with physics "ct": stream(seed, PHANTOM_CT, split, index, part)


def stream(seed: int, *keys: int) -> np.random.Generator:
    """The NumPy generator of one purpose: ``default_rng([seed, *keys])``."""
    return np.random.default_rng([seed, *keys])


def part_seed(seed: int, index: int) -> int:
    """The seed of part ``index`` of a composite strategy seeded with ``seed``: each part has its
    own streams, so adding a part does not change the others' draws."""
    return seed * 1009 + index


def sequence(seed: int) -> np.random.SeedSequence:
    """The root seed sequence of ``seed`` (negative seeds are taken modulo 2**64)."""
    return np.random.SeedSequence(int(seed) % (1 << 64))


def torch_generator(seed: int) -> torch.Generator:
    """A CPU torch generator seeded with ``seed``."""
    import torch

    return torch.Generator().manual_seed(seed)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's (CPU and CUDA) generators with ``seed``."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Run the block with torch's deterministic algorithms (warn-only where an op has none) and
    cuDNN's autotuner off; the previous settings come back afterwards."""
    import torch

    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if enabled and torch.cuda.is_available():
        # cuBLAS needs a fixed workspace to be deterministic; only settable before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads in the block (0 = leave torch's setting alone)."""
    import torch

    prev = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(prev)
