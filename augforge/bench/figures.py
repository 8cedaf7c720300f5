"""Report figures as PNG (matplotlib's Agg renderer; no display, no global pyplot state)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from augforge.bench.ranking import Leaderboard
from augforge.fileio import atomic_write_bytes

__all__ = ["plot_dice_by_class", "plot_dice_with_ci", "sample_grid_path", "write_figures"]

_DPI = 120


def _save(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def plot_dice_with_ci(board: Leaderboard, path: Path) -> None:
    """Mean Dice per strategy (ranked, best on top) with the 95% bootstrap interval as error bars;
    the baseline's mean is a dashed line, strategies not different from it are drawn hollow, and a grey
    band reaches up to the best floor (a predictor that learns nothing) of each context."""
    rows = board.rows
    fig = Figure(figsize=(7.0, 0.45 * len(rows) + 1.4))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    means = np.array([r.dice.mean for r in rows])
    err = np.array([[r.dice.mean - r.dice.low for r in rows], [r.dice.high - r.dice.mean for r in rows]])
    ax.errorbar(means, y, xerr=err, fmt="none", ecolor="0.35", capsize=3, lw=1.2)
    for yi, r in zip(y, rows):
        filled = r.is_baseline or bool(r.significant)
        ax.plot(r.dice.mean, yi, "o", ms=7, color="C3" if r.is_baseline else "C0", mfc=None if filled else "white")
    # Each context (train fraction, preset, dataset) has its own baseline: its line spans its rows only,
    # and a thin rule separates contexts.
    for ctx in dict.fromkeys(r.context for r in rows):
        ys = [yi for yi, r in zip(y, rows) if r.context == ctx]
        base = next((r for r in rows if r.context == ctx and r.is_baseline), None)
        if base is not None:
            ax.vlines(base.dice.mean, min(ys) - 0.4, max(ys) + 0.4, colors="C3", linestyles="--", lw=1, alpha=0.7)
        top = board.ceiling(ctx)
        if top is not None:  # how well the readers agree: a dotted line
            ax.vlines(top.dice.mean, min(ys) - 0.45, max(ys) + 0.45, colors="C2", linestyles=":", lw=1.5)
            ax.text(
                top.dice.mean,
                max(ys) + 0.45,
                f" readers agree {top.dice.mean:.2f}",
                fontsize="x-small",
                color="C2",
                va="top",
                ha="left",
            )
        floor = board.best_floor(ctx)
        if floor is not None:  # what a rule that learns nothing scores: the grey band up to it
            ax.fill_betweenx([min(ys) - 0.45, max(ys) + 0.45], 0, floor.dice.mean, color="0.85", zorder=0, label=None)
            ax.text(
                floor.dice.mean,
                min(ys) - 0.4,
                f" best floor: {floor.name} {floor.dice.mean:.2f}",
                fontsize="x-small",
                color="0.35",
                va="bottom",
                ha="left",
            )
        if min(ys) > 0:
            ax.axhline(min(ys) - 0.5, color="0.6", lw=0.8)
    ax.set_yticks(y, [r.strategy for r in rows])
    ax.set_xlabel("mean per-image Dice (95% bootstrap CI over seeds and test images); grey: up to the best floor")
    ax.set_xlim(left=0)
    ax.set_title("Dice by strategy (hollow: not different from baseline after Holm)")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def plot_dice_by_class(board: Leaderboard, path: Path) -> None:
    """Grouped bars: mean Dice per Lung-RADS class (x) for each strategy (colour)."""
    rows = board.rows
    classes = sorted({c for r in rows for c in r.per_class})
    fig = Figure(figsize=(max(6.0, 1.4 * len(classes) + 2), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(classes))
    for k, r in enumerate(rows):
        vals = [r.per_class.get(c, (0, np.nan))[1] for c in classes]
        ax.bar(x - 0.4 + width * (k + 0.5), vals, width, label=r.strategy)
    ns = [max((r.per_class.get(c, (0, 0.0))[0] for r in rows), default=0) for c in classes]
    ax.set_xticks(x, [f"{c}\n(n={n})" for c, n in zip(classes, ns)])
    ax.set_ylabel("mean per-image Dice")
    ax.set_ylim(0, 1)
    ax.set_title("Dice by Lung-RADS class")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach 1
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def sample_grid_path(folder: Path, strategy: str) -> Path:
    """Where a study keeps the sample grid of ``strategy`` (its label, e.g. ``dcgan+affine``):
    ``<figures>/samples/<label>.png``, with characters other than letters, digits and ``._+-``
    replaced, so any label gives a plain file name."""
    return folder / "samples" / (re.sub(r"[^A-Za-z0-9._+-]+", "_", strategy) + ".png")


def write_figures(board: Leaderboard, folder: Path) -> dict[str, Path]:
    """Write every figure of the report into ``folder``; returns {name: path}. None without results."""
    if not board.rows:
        return {}
    paths = {"dice": folder / "dice_by_strategy.png", "per_class": folder / "dice_by_class.png"}
    plot_dice_with_ci(board, paths["dice"])
    plot_dice_by_class(board, paths["per_class"])
    return paths
