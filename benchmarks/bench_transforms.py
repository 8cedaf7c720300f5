"""Per-sample cost of each classical strategy's transform against the bare albumentations pipeline.

For every strategy, two transforms are built with the same seed: one is called through augforge's
adapter (``AlbumentationsTransform``, what a trial uses), the other's ``albumentations.Compose`` is
called directly. Both therefore draw the same ops with the same parameters, sample for sample
(checked: their outputs are compared), on the same phantom slices, in the same run. Each sample
goes through both back to back, alternating which goes first, so both see the same machine load.

Reported per strategy:

- ``adapter_us`` / ``bare_us``: median over repeats of the mean time per sample, and
  ``overhead`` = adapter_us / bare_us - 1 (the goal: at most 10%);
- ``paired_overhead``: the median, over every (sample, repeat), of the adapter's time minus the
  bare time on that same sample, divided by ``bare_us``. On a loaded machine the ratio of means
  swings by several percent either way with the other processes; the paired median does not;
- and, once for all strategies, the adapter's own fixed cost per call (an empty pipeline through
  the adapter vs bare), and what checking one input costs (done on a transform's first call only).

Usage::

    python benchmarks/bench_transforms.py                      # quick preset (256x256 slices)
    python benchmarks/bench_transforms.py --preset tiny --repeats 5
    python benchmarks/bench_transforms.py --strategy affine --strategy classical --samples 32

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

STRATEGIES = ("affine", "flip", "rotate", "elastic", "intensity", "classical")
GOAL = 0.10

Call = Callable[[np.ndarray, np.ndarray], Any]
Sample = tuple[np.ndarray, np.ndarray]


def _bare(compose: Any) -> Call:
    """Call an albumentations Compose the way its own documentation does."""

    def call(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = compose(image=image, mask=mask)
        return out["image"], out["mask"]

    return call


def paired_times(adapted: Call, bare: Call, samples: list[Sample], repeats: int) -> np.ndarray:
    """(repeats, samples, 2) call times in microseconds, [..., 0] adapter and [..., 1] bare.

    Each sample goes through both back to back; which goes first alternates from sample to sample
    and from repeat to repeat.
    """
    clock = time.perf_counter_ns
    out = np.empty((repeats, len(samples), 2))
    for r in range(repeats):
        for i, (image, mask) in enumerate(samples):
            for slot in (0, 1) if (i + r) % 2 == 0 else (1, 0):
                call = adapted if slot == 0 else bare
                t0 = clock()
                call(image, mask)
                out[r, i, slot] = (clock() - t0) / 1e3
    return out


def _range(values: np.ndarray) -> list[float]:
    return [round(float(values.min()), 2), round(float(values.max()), 2)]


def summarise(times: np.ndarray) -> dict[str, float]:
    per_repeat = times.mean(axis=1)  # (repeats, 2): mean time per sample of each pass
    adapter_us, bare_us = (float(np.median(per_repeat[:, k])) for k in (0, 1))
    paired = float(np.median(times[..., 0] - times[..., 1]))
    return {
        "adapter_us": round(adapter_us, 2),
        "bare_us": round(bare_us, 2),
        "overhead": round(adapter_us / bare_us - 1.0, 4),
        "paired_overhead": round(paired / bare_us, 4),
        "adapter_us_range": _range(per_repeat[:, 0]),
        "bare_us_range": _range(per_repeat[:, 1]),
    }


def bench_strategy(name: str, samples: list[Sample], *, repeats: int, seed: int) -> dict[str, Any]:
    """Adapter vs bare pipeline for one strategy with its default parameters."""
    from augforge.plugins import get_registry

    strategy = get_registry().create(name)
    adapted = strategy.build_transform(seed)
    compose = strategy.build_transform(seed).pipeline  # same seed: the same streams as `adapted`
    bare = _bare(compose)

    # The first pass must agree sample for sample, or the timing would compare different work. It
    # also warms both up (the adapter's first-call input check, OpenCV's lazy initialisation).
    for image, mask in samples:
        a, b = adapted(image, mask), bare(image, mask)
        if not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])):
            raise SystemExit(f"{name}: adapter and bare pipeline disagree; the comparison would be unfair")
    return {
        "ops": [type(t).__name__ for t in compose.transforms],
        **summarise(paired_times(adapted, bare, samples, repeats)),
    }


def adapter_fixed_cost(samples: list[Sample], repeats: int) -> dict[str, float]:
    """The adapter's own cost per call: an empty pipeline through the adapter vs called bare (an
    empty Compose still checks shapes and copies its data dict: the floor of any pipeline)."""
    from augforge.transforms import AlbumentationsTransform

    adapted = AlbumentationsTransform([], seed=0)
    bare = _bare(AlbumentationsTransform([], seed=0).pipeline)
    adapted(*samples[0])
    times = paired_times(adapted, bare, samples, repeats)
    return {
        "empty_compose_us": round(float(np.median(times[..., 1])), 3),
        "adapter_minus_bare_us": round(float(np.median(times[..., 0] - times[..., 1])), 3),
    }


def input_check_us(image: np.ndarray, mask: np.ndarray, repeats: int = 200) -> float:
    """What checking one sample's values costs, microseconds (the adapter does it on its first call
    only; this is the price it would add to every call otherwise)."""
    from augforge.transforms import _check_sample

    t0 = time.perf_counter_ns()
    for _ in range(repeats):
        _check_sample(image, mask)
    return (time.perf_counter_ns() - t0) / repeats / 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick", help="preset whose dataset supplies the slices")
    parser.add_argument(
        "--strategy",
        action="append",
        dest="strategies",
        help=f"strategy to time (repeatable; default: {', '.join(STRATEGIES)})",
    )
    parser.add_argument("--samples", type=int, default=64, help="slices per pass")
    parser.add_argument("--repeats", type=int, default=21, help="passes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--opencv-threads",
        type=int,
        default=1,
        help="OpenCV threads (1: steadier timings; a data loader runs one per worker)",
    )
    args = parser.parse_args(argv)

    import cv2

    from augforge.config import get_preset
    from augforge.data.sources import load_dataset
    from augforge.transforms import load_albumentations

    A = load_albumentations()
    cv2.setNumThreads(args.opencv_threads)
    preset = get_preset(args.preset)
    dataset = load_dataset(preset.data, progress=sys.stderr.isatty())
    samples = [(s.image, s.mask) for s in dataset.train if s.has_tumour][: args.samples]
    t0 = time.time()
    results = {
        name: bench_strategy(name, samples, repeats=args.repeats, seed=args.seed)
        for name in (args.strategies or STRATEGIES)
    }
    worst = max(r["paired_overhead"] for r in results.values())
    print(
        json.dumps(
            {
                "benchmark": "per-sample transform time: augforge adapter vs the bare albumentations.Compose",
                "preset": preset.name,
                "image_shape": list(samples[0][0].shape),
                "samples": len(samples),
                "repeats": args.repeats,
                "seed": args.seed,
                "strategies": results,
                "adapter_fixed_cost": adapter_fixed_cost(samples, args.repeats),
                "input_check_us": round(input_check_us(*samples[0]), 2),
                "max_paired_overhead": worst,
                "max_overhead": max(r["overhead"] for r in results.values()),
                "goal_max_overhead": GOAL,
                "within_goal": worst <= GOAL,
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
                "wall_s": round(time.time() - t0, 1),
                "environment": {
                    "python": platform.python_version(),
                    "numpy": np.__version__,
                    "albumentations": A.__version__,
                    "opencv": cv2.__version__,
                    "opencv_threads": cv2.getNumThreads(),
                    "cpus": os.cpu_count(),
                    "machine": platform.machine(),
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
