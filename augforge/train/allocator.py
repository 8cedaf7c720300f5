"""Keep the memory of freed activations in the process instead of handing it back to the kernel.

A training step of the small CPU U-Nets allocates and frees the same few dozen activation and gradient
buffers (1-30 MB each) every step. glibc's malloc serves blocks of that size with ``mmap`` and
returns them with ``munmap`` once its dynamic threshold has not caught up, and it trims the top of
the heap back to the kernel whenever more than a few MB there are free; either way the next step
faults in and zeroes fresh pages: 10,000-23,000 pages per step of the quick preset, and scoring's
batches of whole slices (17-67 MB buffers) likewise. Keeping them makes a step 0.73-0.92x as long,
scoring a slice 0.56-0.87x, and whole shortened float32 trials 1.20x faster (docs/performance.md,
"The allocator"; ``benchmarks/bench_allocator.py``).

:func:`keep_freed_memory` sets two glibc parameters with ``mallopt`` so that blocks up to 256 MiB come
from the heap and freed heap memory stays in the process for the next step. What a step computes is
unchanged: only where its buffers live. The cost is that the process keeps its peak heap after a
step instead of its current one, which the trial's peak-memory figure already counts.

It is process-wide, so the library's own functions (``train_model``) leave it alone: the benchmark
harness sets it when a process runs trials (``run_trial``: the command line, a study's worker
processes). Code of its own that calls ``train_model`` can call :func:`keep_freed_memory` first.
It does nothing off glibc (macOS, Windows, musl) and when ``AUGFORGE_MALLOC=system`` is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks below this come from the heap: above the 32 MiB that glibc's dynamic threshold stops at, so
#: that scoring's float32 activations of 16 whole slices (34-67 MB) are reused too, not mapped per batch.
MMAP_THRESHOLD = 256 * 1024 * 1024
#: Free memory at the top of the heap kept before glibc trims it.
TRIM_THRESHOLD = 1024 * 1024 * 1024

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for training (once per process). True when the setting is in force."""
    if "done" in _state:
        return _state["done"]
    _state["done"] = False
    if os.environ.get("AUGFORGE_MALLOC", "").strip().lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _state["done"] = ok
    return ok
