"""Learning curves: Dice against the share of training data used, one line per strategy.

Augmentation should matter most when data are scarce; a learning curve shows whether it does. Each
point is the mean over seeds of a trial's mean per-image Dice at one train fraction, with a 95%
Student-t interval over those seeds. The interval is over seeds only (the per-trial records this
works from hold one number per trial): it says how much another training run could move the point,
not how much another test set could. The leaderboard's two-level bootstrap (docs/statistics.md)
covers both, at train fraction 1.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator
from scipy import stats as sstats

from augforge.fileio import atomic_write_bytes
from augforge.strategy import BASELINE

__all__ = ["CurvePoint", "curve_points", "curve_rows", "learning_curve_figure", "seed_interval"]

_DPI = 120
#: The baseline is drawn in black, dashed, so every other line reads against it.


@dataclass(frozen=True)
class CurvePoint:
    """One strategy at one train fraction: mean Dice over seeds and its 95% interval (NaN with one seed)."""

    strategy: str
    train_fraction: float
    mean: float
    low: float
    high: float
    n_seeds: int


def seed_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-seed values and its Student-t interval: (mean, low, high).

    With one value the interval is undefined: (value, nan, nan). t rather than normal quantiles,
    because studies run 3 to 5 seeds (t with 2 degrees of freedom is 4.30, not 1.96).
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("seed_interval needs at least one value")
    mean = float(v.mean())
    if v.size == 1:
        return mean, math.nan, math.nan
    half = float(sstats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def curve_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Results-store trial records (``ResultsStore.records()``) -> the rows this module plots:
    ``{"strategy", "train_fraction", "seed", "dice_mean"}``, finished trials only."""
    out = []
    for r in records:
        if r.get("status", "ok") != "ok":
            continue
        dice = (r.get("metrics") or {}).get("dice")
        if dice is None:
            continue
        out.append(
            {
                "strategy": r["strategy"],
                "train_fraction": float(r["train_fraction"]),
                "seed": int(r["seed"]),
                "dice_mean": float(dice),
            }
        )
    return out


def curve_points(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[CurvePoint]]:
    """Group per-trial rows (strategy, train_fraction, seed, dice_mean) into points per strategy,
    sorted by fraction. Rows without a finite Dice (failed trials) are left out; two rows of one
    seed (should not happen) count as that seed's mean."""
    cells: dict[tuple[str, float], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        dice = r.get("dice_mean")
        if dice is None or not math.isfinite(float(dice)):
            continue
        cells[(str(r["strategy"]), float(r["train_fraction"]))][int(r["seed"])].append(float(dice))
    points: dict[str, list[CurvePoint]] = defaultdict(list)
    for (strategy, fraction), by_seed in sorted(cells.items()):
        mean, low, high = seed_interval(float(np.mean(v)) for v in by_seed.values())
        points[strategy].append(CurvePoint(strategy, fraction, mean, low, high, len(by_seed)))
    return dict(points)


def subsample_unit(records: Iterable[Mapping[str, Any]]) -> str:
    """What a study's train fractions count (``train.subsample``): "slices", "patients", or "training
    data" when its trials differ."""
    units = {
        ((r.get("config") or {}).get("settings") or {}).get("train", {}).get("subsample", "slices") for r in records
    }
    return units.pop() if len(units) == 1 else "training data"


def learning_curve_figure(
    rows: Iterable[Mapping[str, Any]], path: Path | str, *, min_fractions: int = 2, unit: str = "slices"
) -> list[str]:
    """Draw Dice against train fraction, one line per strategy with at least ``min_fractions``
    fractions, and write it to ``path`` (PNG).

    rows: per-trial records, each with ``strategy``, ``train_fraction`` (0, 1], ``seed`` and
        ``dice_mean`` (the trial's mean per-image Dice); see :func:`curve_rows` for store records.
    unit: what a fraction counts, for the axis ("slices" or "patients"; :func:`subsample_unit`).
    Returns the strategies drawn, baseline first; when none has enough fractions, nothing is written
    and the list is empty (a study without a learning curve has no figure).
    """
    points = {s: p for s, p in curve_points(rows).items() if len(p) >= min_fractions}
    if not points:
        return []
    order = sorted(points, key=lambda s: (s != BASELINE, s))
    fractions = sorted({p.train_fraction for ps in points.values() for p in ps})

    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    ax.set_xscale("log")  # 10%, 25%, 50%, 100%: each step a similar distance, as each halves the data
    # Lines side by side in log space, so that error bars at one fraction do not hide each other.
    spread = 0.035 * (len(order) - 1)
    offsets = np.linspace(-spread, spread, len(order)) if len(order) > 1 else np.zeros(1)
    colours = iter(f"C{k % 10}" for k in range(len(order)))
    for strategy, offset in zip(order, offsets):
        ps = points[strategy]
        x = np.array([p.train_fraction for p in ps]) * math.exp(offset)
        y = np.array([p.mean for p in ps])
        err = np.array([[p.mean - p.low for p in ps], [p.high - p.mean for p in ps]])
        err = np.nan_to_num(err, nan=0.0)  # one seed: a point without a bar
        seeds = sorted({p.n_seeds for p in ps})
        n = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        baseline = strategy == BASELINE
        colour = "black" if baseline else next(colours)
        ax.errorbar(
            x,
            y,
            yerr=err,
            color=colour,
            ls="--" if baseline else "-",
            marker="o",
            ms=5,
            lw=1.6,
            capsize=3,
            label=f"{strategy} ({n} seed{'s' if seeds[-1] != 1 else ''})",
        )
    ax.xaxis.set_major_locator(FixedLocator(fractions))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{100 * f:g}%" for f in fractions])
    ax.set_xlim(fractions[0] * 0.8, fractions[-1] * 1.25)
    what = "the real training data" if unit == "training data" else f"the real training {unit}"
    ax.set_xlabel(f"share of {what} (log scale)")
    ax.set_ylabel("mean per-image Dice")
    ax.set_title("Learning curves: mean over seeds, 95% t-interval over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(Path(path), buf.getvalue())
    return order
