"""Progress bars for long loops (training steps, evaluation batches), on stderr, easy to turn off."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["StepBar", "step_progress"]


class StepBar:
    """Handle of one bar: ``advance(n=1, loss=...)`` moves it and updates the shown loss."""

    def __init__(self, progress: Progress | None, task: int | None):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, **fields: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=n, **fields)


@contextlib.contextmanager
def step_progress(description: str, total: int, *, enabled: bool = True,
                  show_loss: bool = True) -> Iterator[StepBar]:
    """A rich bar with step M/N, the latest loss (if ``show_loss``), elapsed time and ETA.

    With ``enabled=False`` (tests, worker processes) nothing is drawn and ``advance`` does nothing.
    """
    if not enabled:
        yield StepBar(None, None)
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if show_loss:
        columns.append(TextColumn("loss {task.fields[loss]:.4f}"))
    columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, loss=float("nan"))
        yield StepBar(progress, task)
