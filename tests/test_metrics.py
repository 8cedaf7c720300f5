"""Per-image metrics: known answers, the empty-mask rules, HD95 against a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from augforge.metrics import METRIC_NAMES, confusion_counts, dice, hd95, iou, precision, recall, segmentation_metrics


def square(top: int, left: int, side: int, shape=(48, 48)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top : top + side, left : left + side] = True
    return m


def test_overlapping_squares_known_answers():
    truth = square(10, 10, 10)  # 100 px
    pred = square(10, 13, 10)  # 100 px, 70 shared
    assert confusion_counts(pred, truth) == (70, 30, 30)
    assert dice(pred, truth) == pytest.approx(0.7)
    assert iou(pred, truth) == pytest.approx(70 / 130)
    assert precision(pred, truth) == pytest.approx(0.7)
    assert recall(pred, truth) == pytest.approx(0.7)


def test_precision_and_recall_are_asymmetric():
    truth = square(5, 5, 10)  # 100 px
    pred = square(5, 5, 5)  # 25 px, all inside the truth
    assert precision(pred, truth) == 1.0
    assert recall(pred, truth) == pytest.approx(0.25)
    assert dice(pred, truth) == pytest.approx(2 * 25 / 125)


def test_empty_masks_follow_the_documented_rules():
    empty = np.zeros((16, 16), bool)
    some = square(2, 2, 4, (16, 16))
    # Both empty: a correct "nothing there" (the paper's code returned 0 here).
    assert (dice(empty, empty), iou(empty, empty), precision(empty, empty), recall(empty, empty)) == (1, 1, 1, 1)
    assert hd95(empty, empty, 1.0) == 0.0
    # Missed tumour: everything 0, HD95 undefined.
    assert (dice(empty, some), iou(empty, some), precision(empty, some), recall(empty, some)) == (0, 0, 0, 0)
    assert math.isnan(hd95(empty, some, 1.0))
    # False alarm on an empty slice.
    assert (dice(some, empty), precision(some, empty), recall(some, empty)) == (0, 0, 0)
    assert math.isnan(hd95(some, empty, 1.0))


def test_batch_and_single_image_agree():
    rng = np.random.default_rng(0)
    pred = rng.random((5, 20, 20)) > 0.7
    truth = rng.random((5, 20, 20)) > 0.6
    batch = dice(pred, truth)
    assert batch.shape == (5,)
    assert np.allclose(batch, [dice(p, t) for p, t in zip(pred, truth)])
    all_metrics = segmentation_metrics(pred, truth, 0.8)
    assert set(METRIC_NAMES) <= set(all_metrics)
    assert np.array_equal(all_metrics["dice"], batch)
    assert np.array_equal(all_metrics["true_px"], truth.sum(axis=(1, 2)))


def test_hd95_of_a_shift_is_the_shift_in_mm():
    truth = square(10, 10, 12)
    pred = square(10, 14, 12)  # shifted 4 columns
    assert hd95(pred, truth, 0.5) == pytest.approx(2.0)  # 4 px * 0.5 mm
    assert hd95(pred, truth, (1.0, 0.25)) == pytest.approx(1.0)  # only the column spacing matters
    assert hd95(truth, truth, 0.7) == 0.0


def _surface(m: np.ndarray) -> np.ndarray:
    return m & ~ndimage.binary_erosion(m, np.ones((3, 3), bool), border_value=0)


def _brute_hd95(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float]) -> float:
    """All-pairs distances between the two boundaries: slow, obviously correct."""
    pa = np.argwhere(_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(_surface(b)) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return float(max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95)))


@pytest.mark.parametrize("seed", range(4))
def test_hd95_matches_brute_force_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    a = ndimage.binary_dilation(rng.random((40, 50)) > 0.97, iterations=2)
    b = ndimage.binary_dilation(rng.random((40, 50)) > 0.97, iterations=2)
    a[0, :3] = True  # a blob touching the border stays on the surface
    assert hd95(a, b, (0.7, 1.3)) == pytest.approx(_brute_hd95(a, b, (0.7, 1.3)), rel=1e-9)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        dice(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
