"""Learning curves: per-seed intervals, grouping of trial records, and the figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.image import imread

from augforge.bench.curves import (
    CurvePoint,
    curve_points,
    curve_rows,
    learning_curve_figure,
    seed_interval,
    subsample_unit,
)


def test_seed_interval_is_the_student_t_interval():
    mean, low, high = seed_interval([0.5, 0.6, 0.7])
    # sd 0.1, n 3: half-width t(0.975, 2) * 0.1 / sqrt(3) = 4.302653 * 0.057735 = 0.248414
    assert mean == pytest.approx(0.6)
    assert (high - mean) == pytest.approx(0.248414, abs=1e-6) and (mean - low) == pytest.approx(0.248414, abs=1e-6)
    assert seed_interval([0.4, 0.4]) == (0.4, 0.4, 0.4)
    one = seed_interval([0.7])
    assert one[0] == 0.7 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(ValueError):
        seed_interval([])


def rows_for(strategy: str, fractions: list[float], seeds: int = 3, base: float = 0.5) -> list[dict]:
    return [
        {"strategy": strategy, "train_fraction": f, "seed": s, "dice_mean": base + 0.3 * f + 0.01 * s}
        for f in fractions
        for s in range(seeds)
    ]


def test_points_group_by_strategy_and_fraction_and_skip_failed_trials():
    rows = rows_for("none", [1.0, 0.1]) + [
        {"strategy": "none", "train_fraction": 0.1, "seed": 7, "dice_mean": None},
        {"strategy": "none", "train_fraction": 0.1, "seed": 8, "dice_mean": float("nan")},
    ]
    points = curve_points(rows)
    assert list(points) == ["none"]
    low, full = points["none"]
    assert (low.train_fraction, low.n_seeds, full.train_fraction) == (0.1, 3, 1.0)
    assert low.mean == pytest.approx(0.5 + 0.03 + 0.01)
    assert isinstance(low, CurvePoint) and low.low < low.mean < low.high


def test_curve_rows_reads_finished_store_records():
    records = [
        {"status": "ok", "strategy": "dcgan", "train_fraction": 0.25, "seed": 1, "metrics": {"dice": 0.61}},
        {"status": "failed", "strategy": "dcgan", "train_fraction": 0.5, "seed": 1, "error": "boom"},
    ]
    assert curve_rows(records) == [{"strategy": "dcgan", "train_fraction": 0.25, "seed": 1, "dice_mean": 0.61}]


def test_the_figure_draws_strategies_with_a_curve_baseline_first(tmp_path):
    rows = (
        rows_for("dcgan", [0.1, 0.25, 0.5, 1.0], base=0.55)
        + rows_for("none", [0.1, 0.25, 0.5, 1.0])
        + rows_for("flip", [1.0])
        + rows_for("classical", [0.5, 1.0], seeds=1)
    )
    path = tmp_path / "figures" / "learning_curve.png"
    drawn = learning_curve_figure(rows, path)
    assert drawn == ["none", "classical", "dcgan"]  # flip has one fraction: no curve
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    assert np.unique(image.reshape(-1, image.shape[2]), axis=0).shape[0] > 10  # lines, not a blank canvas
    again = tmp_path / "again.png"
    learning_curve_figure(rows, again)
    assert again.read_bytes() == path.read_bytes()  # same rows, same file


def test_no_curve_no_figure(tmp_path):
    path = tmp_path / "learning_curve.png"
    assert learning_curve_figure(rows_for("none", [1.0]) + rows_for("flip", [1.0]), path) == []
    assert not path.exists()
    assert learning_curve_figure([], path) == []


def test_the_axis_says_what_a_fraction_counts():
    def record(unit):
        train = {} if unit is None else {"subsample": unit}
        return {"config": {"settings": {"train": train}}}

    assert subsample_unit([record(None), record(None)]) == "slices"  # the default is left out of records
    assert subsample_unit([record("patients")] * 2) == "patients"
    assert subsample_unit([record("patients"), record(None)]) == "training data"
