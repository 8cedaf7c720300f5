"""Progress bars for long data work (rich), off when not wanted (tests, ``--json`` output)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def track(items: Sequence[T], label: str, enabled: bool = True) -> Iterable[T]:
    """``items`` with a transient rich progress bar on stderr when ``enabled``."""
    if not enabled:
        return items
    from rich.console import Console
    from rich.progress import track as rich_track

    return rich_track(items, description=label, transient=True, console=Console(stderr=True))
