"""Fitted models on disk: weights and plain values only (loadable without unpickling any code),
with a checksum beside the file that loading verifies. The DCGAN, the VQ-VAE and the diffusion
model are saved and read through these two functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from augforge.errors import DataError
from augforge.fileio import atomic_write_text, atomic_write_with, file_sha256

__all__ = ["load_weights", "save_weights"]

T = TypeVar("T")


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_weights(path: Path, blob: dict[str, Any]) -> None:
    """Write ``blob`` (tensors, numbers, strings, lists and dicts of them) atomically, then
    ``<path>.sha256``, the file's checksum."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, lambda f: torch.save(blob, f))
    atomic_write_text(_digest_path(path), file_sha256(path) + "\n")


def load_weights(path: Path, build: Callable[[dict[str, Any]], T], *, what: str) -> T:
    """``build(blob)`` of what :func:`save_weights` wrote (``weights_only``: no code is unpickled).

    Raises DataError, naming ``what`` ("generator", "VQ-VAE", ...), when the file has no checksum
    beside it, does not match it (changed or damaged), or cannot be built; delete it to fit again.
    """
    digest = _digest_path(path)
    try:
        expected = digest.read_text().strip()
    except OSError:
        raise DataError(f"{path}: no checksum beside it ({digest.name}); delete it to fit the {what} again") from None
    if file_sha256(path) != expected:
        raise DataError(f"{path}: changed since it was written (checksum mismatch); delete it to fit the {what} again")
    try:
        return build(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 -- whatever torch says, the file is not a model we wrote
        raise DataError(
            f"{path}: not a {what} this version of augforge can read ({type(exc).__name__}); "
            f"delete it to fit the {what} again"
        ) from None
