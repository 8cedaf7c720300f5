"""Placement benchmark: valid tumour positions per healthy slice, FFT correlation vs per-position scans.

For pairs of (healthy canvas, real training tumour mask) of the dataset, finds every top-left corner
at which the tumour lies inside the lung parenchyma (off vessels, clear of the wall) three ways:

- ``placement``: :func:`augforge.synthesis.valid_positions` (one correlation over the lungs' box,
  direct for small masks and by DFT for large ones);
- ``brute``: the seed paper's method, a Python loop over every position of the slice testing
  ``allowed[r:r+h, c:c+w][mask].all()``;
- ``numpy-windows``: the same test vectorised with ``sliding_window_view`` (a strong peer).

Asserts that all three give the same set of valid positions, and prints one JSON object with
milliseconds per slice (median over pairs) and the speed-ups. The allowed-pixel map (lung field,
vessels, clearance) is computed once per canvas and timed on its own: every method needs it.
Wall and CPU time are both given: on a shared machine the wall time includes waiting for a core.

    python benchmarks/bench_placement.py                 # the default dataset (quick preset)
    python benchmarks/bench_placement.py --preset tiny --pairs 4
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
from scipy import ndimage


def brute_force(allowed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Every position tested on its own: the definition of a valid position."""
    (H, W), (h, w) = allowed.shape, mask.shape
    out = np.zeros((H - h + 1, W - w + 1), bool)
    for r in range(H - h + 1):
        for c in range(W - w + 1):
            out[r, c] = allowed[r : r + h, c : c + w][mask].all()
    return out


def numpy_windows(allowed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """All windows at once as a strided view; memory grows with positions x mask pixels."""
    windows = np.lib.stride_tricks.sliding_window_view(allowed, mask.shape)
    return windows[..., mask].all(-1)


def _timed(fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, 1e3 * (time.perf_counter() - w), 1e3 * (time.process_time() - c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--pairs", type=int, default=8, help="(canvas, tumour) pairs to time")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from augforge.config import get_preset
    from augforge.data.sources import load_dataset
    from augforge.synthesis import allowed_region, canvas_lung, valid_positions

    dataset = load_dataset(get_preset(args.preset).data, progress=False)
    rng = np.random.default_rng(args.seed)
    # Real tumour masks of the training split, cropped to their bounding boxes.
    masks = []
    for s in dataset.train:
        box = ndimage.find_objects(s.mask.astype(np.int32))[0]
        masks.append(s.mask[box].astype(bool))
    picks = rng.choice(len(masks), size=args.pairs, replace=False)
    canvases = [dataset.healthy[i] for i in rng.choice(len(dataset.healthy), size=args.pairs)]

    rows = []
    for canvas, k in zip(canvases, picks):
        mask = masks[k]
        allowed, t_allowed, c_allowed = _timed(allowed_region, canvas.hu, canvas_lung(canvas))
        fast, t_fast, c_fast = _timed(valid_positions, allowed, mask)
        windows, t_win, c_win = _timed(numpy_windows, allowed, mask)
        brute, t_brute, c_brute = _timed(brute_force, allowed, mask)
        if not (np.array_equal(fast, brute) and np.array_equal(windows, brute)):
            raise SystemExit(f"valid position sets differ on canvas {canvas.id}, mask {mask.shape}")
        rows.append(
            {
                "mask_px": list(mask.shape),
                "valid": int(brute.sum()),
                "allowed_ms": t_allowed,
                "placement_ms": t_fast,
                "placement_cpu_ms": c_fast,
                "windows_ms": t_win,
                "windows_cpu_ms": c_win,
                "brute_ms": t_brute,
                "brute_cpu_ms": c_brute,
                "allowed_cpu_ms": c_allowed,
            }
        )

    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.endswith("_ms")}
    print(
        json.dumps(
            {
                "preset": args.preset,
                "slice_px": list(dataset.healthy[0].shape),
                "pairs": len(rows),
                "same_valid_sets": True,
                "median_ms_per_slice": {k: round(v, 3) for k, v in med.items()},
                "speedup_vs_brute": round(med["brute_ms"] / med["placement_ms"], 1),
                "speedup_vs_brute_cpu": round(med["brute_cpu_ms"] / med["placement_cpu_ms"], 1),
                "speedup_vs_numpy_windows": round(med["windows_ms"] / med["placement_ms"], 1),
                "speedup_vs_brute_incl_allowed_map": round(
                    (med["brute_ms"] + med["allowed_ms"]) / (med["placement_ms"] + med["allowed_ms"]), 1
                ),
                "mask_sizes_px": [r["mask_px"] for r in rows],
                "python": platform.python_version(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
