"""Statistics for ranking strategies: bootstrap confidence intervals over seeds and test images,
paired comparisons with the baseline, effect sizes and Holm's correction. docs/statistics.md explains
the method in plain words.

Data layout: the per-image Dice of one strategy is a matrix ``(S, I)`` -- S seeds (one trial each) by
I test images. Every strategy is evaluated on the same test images, in the same column order, so two
strategies' matrices can be paired column by column; and a seed fixes the training subset and the
network's initial weights, so rows with the same seed are paired too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sstats

from augforge import seeding

__all__ = [
    "ALPHA",
    "MIN_SEEDS",
    "Comparison",
    "Estimate",
    "bootstrap_mean",
    "compare_paired",
    "fmt_p",
    "hierarchical_bootstrap_means",
    "holm_adjust",
    "rank_biserial",
]

#: Family-wise significance level used to mark differences (after Holm's correction).
ALPHA = 0.05
#: Fewest seeds two strategies must share for a difference between them to be called. With one seed
#: the two-level bootstrap cannot resample training runs, so both tests see the test images of a
#: single training run each: the same seed of the README's main job gave Delta -0.020, p 0.004 on a
#: CPU and +0.003, p 0.65 on a GPU (benchmarks/gpu/README.md). One seed's p-values are still shown.
MIN_SEEDS = 2
#: Bootstrap resamples; 10,000 keeps the Monte-Carlo error of a 95% bound well under 0.005 Dice.
N_BOOT = 10_000


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n_seeds: int
    n_images: int


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of strategy A with strategy B (usually the baseline) on per-image Dice.

    delta:        mean(A) - mean(B) over the seeds both have and all images.
    low/high:     95% paired hierarchical-bootstrap interval of delta.
    p_wilcoxon:   two-sided Wilcoxon signed-rank p of the per-image differences (mean over seeds).
    p_bootstrap:  two-sided paired-bootstrap p (how often the resampled delta lands across zero).
    rank_biserial: matched-pairs rank-biserial correlation in [-1, 1] (the Wilcoxon effect size).
    cohen_dz:     mean per-image difference over its standard deviation.
    n_seeds:      seeds used (present in both arms); n_images: paired images.
    """

    delta: float
    low: float
    high: float
    p_wilcoxon: float
    p_bootstrap: float
    rank_biserial: float
    cohen_dz: float
    n_seeds: int
    n_images: int


def _check_matrix(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
        raise ValueError(f"expected a (seeds, images) matrix with at least one of each, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("per-image values contain NaN or infinity")
    return v


def _resample_counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n) float64: how often each of n items is drawn in each resample of size n."""
    draws = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def hierarchical_bootstrap_means(values: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the grand mean of a (seeds, images) matrix.

    Each resample draws S seeds with replacement, then I images with replacement (the same images
    for every drawn seed, since all seeds are evaluated on one test set), and takes the mean of the
    selected cells. With one seed this is the ordinary bootstrap over images. Returns (n_boot,).
    """
    v = _check_matrix(values)
    s, i = v.shape
    rng = seeding.stream(seed)
    # Resampling with replacement == multinomial counts: the mean of the resampled cells is
    # w_seed @ V @ w_image / (S * I), computed for all resamples at once without index gathers.
    w_seed = _resample_counts(rng, n_boot, s)  # (B, S)
    w_img = _resample_counts(rng, n_boot, i)  # (B, I)
    per_seed = w_img @ v.T  # (B, S): image-weighted sums for every seed
    return np.einsum("bs,bs->b", w_seed, per_seed) / (s * i)


def bootstrap_mean(values: np.ndarray, *, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Mean of a (seeds, images) matrix with a percentile hierarchical-bootstrap interval."""
    v = _check_matrix(values)
    boots = hierarchical_bootstrap_means(v, n_boot=n_boot, seed=seed)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(boots, [tail, 1.0 - tail])
    return Estimate(float(v.mean()), float(low), float(high), v.shape[0], v.shape[1])


def rank_biserial(diffs: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of paired differences: (R+ - R-) / (R+ + R-), where R+
    and R- are the sums of the ranks of |d| over the positive and negative differences (zeros
    dropped, as in Wilcoxon's test). +1: every image improved; 0: no tendency; 0.0 if all are zero."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = sstats.rankdata(np.abs(d))
    r_plus, r_minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((r_plus - r_minus) / (r_plus + r_minus))


def _wilcoxon_p(diffs: np.ndarray) -> float:
    nonzero = diffs[diffs != 0]
    if nonzero.size == 0:
        return 1.0  # identical per-image scores: no evidence of any difference
    return float(sstats.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided").pvalue)


def compare_paired(
    a: np.ndarray,
    b: np.ndarray,
    *,
    seeds_a: list[int] | None = None,
    seeds_b: list[int] | None = None,
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Comparison:
    """Paired comparison of two (seeds, images) matrices on the same images (A minus B).

    When ``seeds_a``/``seeds_b`` name the rows' seeds, only seeds present in both are used, row with
    row (a failed trial drops its seed from the comparison); otherwise the matrices must have the
    same rows. The bootstrap resamples seeds, then images, of the difference matrix.
    """
    va, vb = _check_matrix(a), _check_matrix(b)
    if va.shape[1] != vb.shape[1]:
        raise ValueError(f"paired comparison needs the same images: {va.shape[1]} vs {vb.shape[1]} columns")
    if seeds_a is not None and seeds_b is not None:
        common = sorted(set(seeds_a) & set(seeds_b))
        if not common:
            raise ValueError("paired comparison: the two strategies share no seed")
        va = va[[seeds_a.index(s) for s in common]]
        vb = vb[[seeds_b.index(s) for s in common]]
    elif va.shape != vb.shape:
        raise ValueError(f"paired comparison needs equal shapes without seed labels: {va.shape} vs {vb.shape}")
    diff = va - vb  # (S, I)
    per_image = diff.mean(axis=0)  # (I,) the unit of the signed-rank test
    boots = hierarchical_bootstrap_means(diff, n_boot=n_boot, seed=seed)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(boots, [tail, 1.0 - tail])
    # Two-sided bootstrap p: twice the smaller share of resamples on either side of zero, with the
    # +1 correction so that p is never exactly 0 from a finite number of resamples.
    below = (1 + np.count_nonzero(boots <= 0)) / (n_boot + 1)
    above = (1 + np.count_nonzero(boots >= 0)) / (n_boot + 1)
    p_boot = min(1.0, 2.0 * min(below, above))
    sd = per_image.std(ddof=1) if per_image.size > 1 else 0.0
    dz = float(per_image.mean() / sd) if sd > 0 else 0.0
    return Comparison(
        delta=float(diff.mean()),
        low=float(low),
        high=float(high),
        p_wilcoxon=_wilcoxon_p(per_image),
        p_bootstrap=float(p_boot),
        rank_biserial=rank_biserial(per_image),
        cohen_dz=dz,
        n_seeds=diff.shape[0],
        n_images=diff.shape[1],
    )


def holm_adjust(pvalues: list[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given); NaN entries stay NaN and do not count.

    The k-th smallest of m p-values is multiplied by (m - k + 1), then running maxima keep the
    adjusted values monotone, capped at 1. Reject where adjusted p < alpha: the family-wise error
    rate stays at most alpha for any dependence between the tests.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for k, j in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[j]))
        out[j] = running
    return out


def fmt_p(p: float) -> str:
    """A p-value for tables: 3 significant digits, '<0.001' below that, '-' when undefined."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3g}"
