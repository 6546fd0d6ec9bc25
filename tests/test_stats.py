"""ptlens.stats against reference implementations: scipy.stats (normal cdf/quantile, Wilson bound, the exact
permutation test), statsmodels (Holm), and a plain numpy resample of problems (the bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from ptlens.stats.bootstrap import estimate, paired_difference, resample_weights
from ptlens.stats.bounds import binomial_upper, normal_cdf, normal_upper_quantile
from ptlens.stats.multiple import bonferroni_lower_tails, holm, rejectable_from
from ptlens.stats.permutation import flip_patterns, is_complete, paired_test, smallest_p
from ptlens.stats.statistic import Statistic


def test_normal_cdf_and_quantile_match_scipy():
    for x in np.linspace(-6, 6, 49):
        assert normal_cdf(float(x)) == pytest.approx(sps.norm.cdf(x), abs=1e-15)
    for p in (0.5, 0.1, 0.025, 0.05 / 16, 1e-6):
        assert normal_upper_quantile(p) == pytest.approx(sps.norm.isf(p), abs=1e-9)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (7, 200), (0, 2000), (1, 1)])
def test_binomial_upper_is_scipys_wilson_bound(k, n):
    # the one-sided bound at z is the upper end of the two-sided Wilson interval at confidence 1 − 2(1 − Φ(z))
    z = 2.326
    want = sps.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * sps.norm.sf(z), method="wilson").high
    assert binomial_upper(k, n, z) == pytest.approx(want, rel=1e-12)
    assert binomial_upper(0, 0) == 1.0


def _ratio_stat(num, den):
    return lambda x, y: num[y.astype(int)].sum() / den[y.astype(int)].sum() - num[x.astype(int)].sum() / den[x.astype(int)].sum()


def test_complete_sign_flip_p_value_is_scipys_exact_paired_permutation_test():
    rng = np.random.default_rng(7)
    p = 8
    flips = flip_patterns(p)
    assert is_complete(flips) and flips.shape == (256, 8) and len({tuple(r) for r in flips}) == 256
    for _ in range(4):
        num_a, num_b = rng.integers(0, 9, p).astype(float), rng.integers(0, 9, p).astype(float)
        den_a, den_b = rng.integers(8, 12, p).astype(float), rng.integers(8, 12, p).astype(float)
        # scipy swaps x_i and y_i within pairs: pass each model's row indices into one (num, den) table
        num, den = np.concatenate([num_a, num_b]), np.concatenate([den_a, den_b])
        ref = sps.permutation_test((np.arange(p, dtype=float), np.arange(p, 2 * p, dtype=float)), _ratio_stat(num, den),
                                   permutation_type="samples", n_resamples=np.inf, alternative="two-sided")
        got = paired_test(Statistic(num_b, den_b), Statistic(num_a, den_a), flips)
        assert got == pytest.approx(ref.pvalue, rel=1e-12)


def test_monte_carlo_sign_flip_p_value_counts_hits_plus_one():
    rng = np.random.default_rng(1)
    a, b = rng.random(40), rng.random(40) + 0.1
    flips = flip_patterns(40, 300, seed=2)
    assert not is_complete(flips) and flips.shape == (300, 40)
    t0 = b.mean() - a.mean()
    t = np.array([np.where(f > 0, a, b).mean() - np.where(f > 0, b, a).mean() for f in flips])
    hits = int(np.sum(np.abs(t) >= abs(t0) - 1e-12))
    assert paired_test(Statistic.mean(b), Statistic.mean(a), flips) == pytest.approx((1 + hits) / 301)


def test_smallest_p_and_rejectable_from():
    # a difference that no swap pattern beats gets scipy's smallest exact p-value, 2 / 2^P
    p = 6
    ref = sps.permutation_test((np.zeros(p), np.ones(p)), lambda x, y: y.mean() - x.mean(), permutation_type="samples",
                               n_resamples=np.inf, alternative="two-sided").pvalue
    assert smallest_p(p) == pytest.approx(ref) == pytest.approx(2 / 64)
    for alpha, m in [(0.05, 1), (0.05, 8), (0.001, 8), (0.01, 3)]:
        want = next(n for n in range(1, 64) if smallest_p(n) <= alpha / m)
        assert rejectable_from(alpha, m) == want
    assert rejectable_from(0.05, 1) == 6 and rejectable_from(0.05, 8) == 9


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests  # a dev dependency: missing it fails, never skips

    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 12):
        pv = list(rng.random(m) ** 3)
        assert holm(pv) == pytest.approx(list(multipletests(pv, method="holm")[1]), abs=1e-15)
    # None stays None and does not count toward m
    pv = [0.04, 0.01, None, 0.02]
    want = multipletests([0.04, 0.01, 0.02], method="holm")[1]
    assert holm(pv) == [pytest.approx(want[0]), pytest.approx(want[1]), None, pytest.approx(want[2])]
    assert holm(pv) == [pytest.approx(0.04), pytest.approx(0.03), None, pytest.approx(0.04)]  # by hand
    assert holm([]) == []


def test_bootstrap_is_a_plain_numpy_resample_of_problems():
    rng = np.random.default_rng(4)
    n, n_boot, seed = 25, 400, 9
    num_a, num_b, den = rng.random(n) * 5, rng.random(n) * 6, rng.integers(4, 9, n).astype(float)
    w = resample_weights(n, n_boot, seed)
    assert w.shape == (n_boot, n) and (w.sum(axis=1) == n).all()
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # the same draws, as indices
    reps_a = num_a[idx].sum(axis=1) / den[idx].sum(axis=1)
    reps_b = num_b[idx].sum(axis=1) / den[idx].sum(axis=1)
    sa, sb = Statistic(num_a, den), Statistic(num_b, den)
    e = estimate(sa, w)
    assert e.value == pytest.approx(num_a.sum() / den.sum())
    assert (e.lo, e.hi) == pytest.approx(tuple(np.percentile(reps_a, [2.5, 97.5])), rel=1e-12)
    d = paired_difference(sb, sa, w)
    assert (d.lo, d.hi) == pytest.approx(tuple(np.percentile(reps_b - reps_a, [2.5, 97.5])), rel=1e-12)
    # a one-sided Bonferroni bound over 4 claims: the 1.25th percentile of the same resamples
    fw = estimate(sa, w, bonferroni_lower_tails(4))
    assert bonferroni_lower_tails(4) == (1.25, 100.0)
    assert fw.lo == pytest.approx(np.percentile(reps_a, 1.25), rel=1e-12) and fw.hi == pytest.approx(reps_a.max())


def test_bootstrap_interval_agrees_with_scipy_bootstrap():
    # a different random stream, so only agreement within resampling noise: the mean of 200 values
    x = np.random.default_rng(5).normal(1.0, 2.0, 200)
    e = estimate(Statistic.mean(x), resample_weights(len(x), 4000, 0))
    ref = sps.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    assert e.lo == pytest.approx(ref.low, abs=0.03) and e.hi == pytest.approx(ref.high, abs=0.03)
