"""Run data work in chunks, on several processes when the job is big enough to pay for them.

Every slice has its own random stream, so the result does not depend on the number of workers.
Workers are started with "spawn": forking a process whose OpenCV or torch thread pools have run
can deadlock the child. ``AUGFORGE_DATA_WORKERS`` sets the number of processes (1 = in-process).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from augforge.errors import UsageError
from augforge.progress import track

A = TypeVar("A")
R = TypeVar("R")

#: Below this many slices, starting processes (about a second each) costs more than it saves.
MIN_ITEMS_FOR_WORKERS = 256
MAX_WORKERS = 4


def workers_for(n_items: int) -> int:
    """How many processes to use for ``n_items`` slices."""
    env = os.environ.get("AUGFORGE_DATA_WORKERS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise UsageError(f"AUGFORGE_DATA_WORKERS={env!r}: expected a whole number") from None
    if n_items < MIN_ITEMS_FOR_WORKERS or multiprocessing.current_process().daemon:
        return 1  # small jobs; and a daemonic worker (a multiprocessing.Pool's) may not have children
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def chunked(items: Sequence[A], n: int) -> list[Sequence[A]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def map_chunks(fn: Callable[[A], R], chunks: Sequence[A], workers: int, label: str, progress: bool) -> Iterator[R]:
    """``fn(chunk)`` for every chunk, in order; ``fn`` must be a module-level function."""
    if workers <= 1 or len(chunks) <= 1:
        yield from (fn(c) for c in track(chunks, label, progress))
        return
    ctx = multiprocessing.get_context("spawn")
    done = 0
    try:
        with cf.ProcessPoolExecutor(min(workers, len(chunks)), mp_context=ctx) as pool:
            for result in track(_Sized(pool.map(fn, chunks), len(chunks)), label, progress):
                yield result
                done += 1
    except (cf.process.BrokenProcessPool, OSError):
        # Workers could not start (a script without an `if __name__ == "__main__":` guard, a
        # sandbox without semaphores): finish in this process; the results are the same.
        yield from (fn(c) for c in track(chunks[done:], label, progress))


class _Sized:
    """An iterator with a length, so that the progress bar knows its total."""

    def __init__(self, it: Iterator[R], n: int) -> None:
        self.it, self.n = it, n

    def __iter__(self) -> Iterator[R]:
        return self.it

    def __len__(self) -> int:
        return self.n
