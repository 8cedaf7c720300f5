"""Progress on stderr: one kind of rich bar for every long loop in augforge, or nothing when off.

``bar(description, total, enabled=...)`` is a context manager giving a :class:`Bar`;
``track(items, label, enabled)`` wraps an iterable in a transient bar. Off (tests, worker
processes, ``--no-progress``), neither draws anything and a ``Bar`` does nothing, except
``note``, which still prints its line.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["Bar", "bar", "track"]

T = TypeVar("T")


class Bar:
    """Handle of one bar."""

    def __init__(self, progress: Any = None, task: Any = None):
        self._progress, self._task = progress, task

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def advance(self, n: float = 1, **fields: Any) -> None:
        """Move the bar ``n`` steps and set the shown ``fields`` (e.g. ``loss=0.31``)."""
        if self._progress is not None:
            self._progress.update(self._task, advance=n, **fields)

    def update(self, *, completed: float | None = None, description: str | None = None, **fields: Any) -> None:
        """Set the bar's position, its description or its fields."""
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, description=description, **fields)

    def note(self, text: str) -> None:
        """Print ``text`` as a line of its own, above the bar when one is drawn."""
        if self._progress is None:
            print(text, file=sys.stderr, flush=True)
        else:
            self._progress.console.print(text, markup=False, highlight=False)


@contextlib.contextmanager
def bar(
    description: str,
    total: float | None,
    *,
    enabled: bool = True,
    fields: dict[str, Any] | None = None,
    columns: Sequence[str] = (),
    prefix: str | None = None,
    eta: bool = True,
    spinner: bool = False,
    transient: bool = False,
) -> Iterator[Bar]:
    """A bar: [spinner] [prefix] description, the bar, done/total, elapsed [, eta], then ``columns``.

    ``columns`` are rich text templates of the bar's ``fields`` (e.g. ``"loss {task.fields[loss]:.4f}"``),
    ``fields`` their first values. With ``enabled=False`` nothing is drawn.
    """
    if not enabled:
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    parts: list[Any] = [SpinnerColumn()] if spinner else []
    if prefix:
        parts.append(TextColumn(prefix))
    parts += [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        parts += [TextColumn("eta"), TimeRemainingColumn()]
    parts += [TextColumn(c) for c in columns]  # last: a narrow terminal cuts these, not the times
    with Progress(*parts, console=Console(stderr=True), transient=transient) as progress:
        task = progress.add_task(description, total=total, **(fields or {}))
        yield Bar(progress, task)


def track(items: Iterable[T], label: str, enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """``items`` one by one, under a transient bar labelled ``label`` when ``enabled``."""
    if not enabled:
        yield from items
        return
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    with bar(label, total, transient=True) as b:
        for item in items:
            yield item
            b.advance()
