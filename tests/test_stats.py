"""Statistics with known answers: bootstrap intervals, paired tests, effect sizes, Holm."""

from __future__ import annotations

import numpy as np
import pytest

from augforge.bench.stats import (
    bootstrap_mean,
    compare_paired,
    hierarchical_bootstrap_means,
    holm_adjust,
    rank_biserial,
)


def test_constant_values_give_a_zero_width_interval():
    est = bootstrap_mean(np.full((3, 40), 0.42), n_boot=2000)
    assert (est.mean, est.low, est.high) == pytest.approx((0.42, 0.42, 0.42))
    assert (est.n_seeds, est.n_images) == (3, 40)


def test_one_seed_interval_matches_the_normal_theory_width():
    rng = np.random.default_rng(1)
    x = rng.normal(0.5, 0.2, size=(1, 400))
    est = bootstrap_mean(x, n_boot=20_000, seed=2)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert est.mean == pytest.approx(x.mean())
    assert (est.high - est.low) / 2 == pytest.approx(half, rel=0.08)
    assert est.low < x.mean() < est.high


def test_resampling_seeds_widens_the_interval_when_seeds_disagree():
    # Three seeds whose runs differ by a large offset: images alone would hide that uncertainty.
    rng = np.random.default_rng(0)
    offsets = np.array([[-0.1], [0.0], [0.1]])
    values = 0.5 + offsets + rng.normal(0, 0.01, size=(3, 200))
    hier = bootstrap_mean(values, n_boot=5000)
    flat = bootstrap_mean(values.mean(axis=0, keepdims=True), n_boot=5000)  # images only
    assert (hier.high - hier.low) > 5 * (flat.high - flat.low)
    # The bootstrap mean of the seed means has the spread of a 3-sample mean of {-0.1, 0, 0.1}.
    boots = hierarchical_bootstrap_means(values, n_boot=20_000, seed=3)
    assert boots.std() == pytest.approx(np.sqrt(np.var([-0.1, 0.0, 0.1]) / 3), rel=0.1)


def test_bootstrap_is_reproducible_with_its_seed():
    x = np.random.default_rng(5).random((2, 30))
    assert np.array_equal(
        hierarchical_bootstrap_means(x, n_boot=100, seed=7), hierarchical_bootstrap_means(x, n_boot=100, seed=7)
    )


def test_identical_strategies_are_not_different():
    x = np.random.default_rng(2).random((2, 50))
    c = compare_paired(x, x.copy(), n_boot=2000)
    assert (c.delta, c.low, c.high) == (0.0, 0.0, 0.0)
    assert c.p_wilcoxon == 1.0 and c.p_bootstrap == 1.0
    assert c.rank_biserial == 0.0 and c.cohen_dz == 0.0


def test_every_image_better_gives_the_exact_signed_rank_p():
    rng = np.random.default_rng(4)
    base = rng.random((1, 10)) * 0.5
    gains = np.arange(1, 11) / 100.0  # distinct, all positive
    c = compare_paired(base + gains, base, n_boot=4000)
    # Exact two-sided Wilcoxon p with all 10 ranks positive: 2 / 2**10.
    assert c.p_wilcoxon == pytest.approx(2 / 2**10)
    assert c.rank_biserial == 1.0
    assert c.delta == pytest.approx(gains.mean())
    assert 0 < c.low <= c.delta <= c.high
    assert c.p_bootstrap < 0.001


def test_pairing_uses_only_shared_seeds():
    a = np.array([[0.6, 0.7, 0.8], [0.9, 0.9, 0.9]])  # seeds 0, 2
    b = np.array([[0.5, 0.6, 0.7], [0.0, 0.0, 0.0], [0.8, 0.8, 0.8]])  # seeds 0, 1, 2
    c = compare_paired(a, b, seeds_a=[0, 2], seeds_b=[0, 1, 2], n_boot=500)
    assert c.n_seeds == 2
    assert c.delta == pytest.approx(0.1)  # seed 1 of b (no partner) is left out
    with pytest.raises(ValueError, match="share no seed"):
        compare_paired(a[:1], b[1:2], seeds_a=[0], seeds_b=[1])


def test_rank_biserial_known_values():
    assert rank_biserial(np.array([1.0, 2.0, -3.0])) == pytest.approx((1 + 2 - 3) / 6)
    assert rank_biserial(np.array([-1.0, -2.0])) == -1.0
    assert rank_biserial(np.zeros(4)) == 0.0


def test_holm_known_answer_and_order():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert holm_adjust(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = holm_adjust([np.nan, 0.02])
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.02)
    assert holm_adjust([]).size == 0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean(np.array([[0.1, np.nan]]))
    with pytest.raises(ValueError, match="same images"):
        compare_paired(np.zeros((1, 3)), np.zeros((1, 4)))
