"""The behaviour verdict's error rates: the paired test is exact, and null simulations through the real pipeline
(sample records → compare_models → results dict → reasoning_behaviour) give few false alarms and find a real gain.

The null simulations decide on the sign-flip test and point values only, so they run with 20 bootstrap resamples
(descriptive intervals, unused by the decision) and 1000 random sign-flip patterns (the Monte-Carlo p-value is exact for
any number of patterns; fewer patterns only cost power). Benchmarks with more replicates: docs/validation/verdicts.md.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ptlens.behavior import metrics as M
from ptlens.report import calibration as C
from ptlens.report.verdicts import CLEAR, UNEXPECTED, Criteria
from ptlens.stats import bootstrap as B
from ptlens.stats import permutation as P
from ptlens.stats.bounds import normal_cdf, normal_upper_quantile
from ptlens.stats.statistic import Statistic


def binomial_critical(n: int, p: float, tail: float = 1e-3) -> int:
    """Smallest k with P(Binomial(n, p) > k) ≤ tail: more than k events would refute a rate ≤ p."""
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.comb(n, k) * p ** k * (1 - p) ** (n - k)
        if 1 - cdf <= tail:
            return k
    return n


# ---------------------------------------------------------------- the paired test itself


def _brute_force_p(num_a, den_a, num_b, den_b):
    """Every swap pattern by explicit loops: the definition the vectorised test must equal."""
    t0 = sum(num_b) / sum(den_b) - sum(num_a) / sum(den_a)
    hits = total = 0
    for pattern in itertools.product((0, 1), repeat=len(num_a)):
        na = [b if s else a for a, b, s in zip(num_a, num_b, pattern)]
        da = [b if s else a for a, b, s in zip(den_a, den_b, pattern)]
        nb = [a if s else b for a, b, s in zip(num_a, num_b, pattern)]
        db = [a if s else b for a, b, s in zip(den_a, den_b, pattern)]
        t = sum(nb) / sum(db) - sum(na) / sum(da)
        hits += abs(t) >= abs(t0) - 1e-12
        total += 1
    return hits / total


def test_complete_sign_flip_test_equals_enumeration_by_hand():
    rng = np.random.default_rng(5)
    for _ in range(5):
        p = 7
        num_a, num_b = rng.integers(0, 9, p).astype(float), rng.integers(0, 9, p).astype(float)
        den_a, den_b = rng.integers(8, 12, p).astype(float), rng.integers(8, 12, p).astype(float)
        flips = P.flip_patterns(p, n_perm=2000)
        assert P.is_complete(flips) and flips.shape == (128, 7)
        got = P.paired_test(Statistic(num_b, den_b), Statistic(num_a, den_a), flips)
        assert got == pytest.approx(_brute_force_p(num_a, den_a, num_b, den_b))
    # identical models: p = 1; a difference no pattern beats: the smallest p, 2 / 2^P
    same = Statistic(np.ones(7), np.full(7, 2.0))
    assert P.paired_test(same, same, P.flip_patterns(7)) == 1.0
    up = P.paired_test(Statistic(np.full(7, 2.0), np.full(7, 2.0)), Statistic(np.zeros(7), np.full(7, 2.0)),
                       P.flip_patterns(7))
    assert up == pytest.approx(2 / 128) == pytest.approx(P.smallest_p(7))


def test_ece_as_column_sums_equals_ece_of_resampled_problems():
    rng = np.random.default_rng(2)
    conf, right = rng.random(30), rng.random(30) < 0.6
    stat = M.ece_statistic(conf, right)
    assert float(stat.value()) == pytest.approx(M.ece(conf, right))
    w = B.resample_weights(30, 50, seed=1)
    many = stat.value(w)
    for row, v in zip(w, many):
        rep = np.repeat(np.arange(30), row.astype(int))
        assert v == pytest.approx(M.ece(conf[rep], right[rep]))


def test_single_test_holds_its_level_with_few_problems():
    # the reviewer's case: the accuracy check alone fired 8% at nominal 5% with 12 problems × 8 samples (percentile
    # bootstrap). The sign-flip test on the same design stays at or below 5% (binomial margin over 2000 replicates).
    rng = np.random.default_rng(0)
    flips = P.flip_patterns(12, 500, seed=3)
    rejections, reps = 0, 2000
    for _ in range(reps):
        p = rng.beta(2, 2, 12)
        ca, cb = rng.binomial(8, p), rng.binomial(8, p)
        pv = P.paired_test(Statistic(cb.astype(float), np.full(12, 8.0)), Statistic(ca.astype(float), np.full(12, 8.0)),
                           flips)
        rejections += pv is not None and pv <= 0.05
    assert rejections <= binomial_critical(reps, 0.05), rejections / reps


# ---------------------------------------------------------------- the verdict, through the real pipeline


@pytest.mark.parametrize("problems,samples", [(12, 8), (30, 4), (60, 16)])
def test_null_simulation_false_alarms_at_most_five_percent(problems, samples):
    reps = 200
    out = C.simulate(problems, samples, reps, effect=0.0, seed=11)
    alarms = round(out["false_alarm"] * reps)
    # ≤ 5% with a binomial margin: more than this many alarms in 200 would refute a rate ≤ 5% (P < 0.001)
    assert alarms <= binomial_critical(reps, 0.05), out


def test_planted_accuracy_gain_is_found():
    reps = 40
    out = C.simulate(60, 16, reps, effect=0.15, seed=12)
    assert out["accuracy_found"] >= 0.8, out
    assert out["design_power"] >= 0.8  # the analytic design agrees that this size suffices


def test_one_replicate_is_the_report_pipeline():
    # the simulated verdict is a real reasoning_behaviour verdict with Holm-adjusted sign-flip p-values
    v = C.simulate_verdict(np.random.default_rng(1), 30, 4, effect=0.3)
    acc = next(c for c in v.checks if c.name.startswith("Accuracy"))
    assert acc.p is not None and acc.p_adjusted >= acc.p and "sign-flip" in acc.rule
    assert v.label in (CLEAR, UNEXPECTED) and len(v.checks) == C.N_CHECKS
    few = C.simulate_verdict(np.random.default_rng(1), 8, 4)
    assert few.label == "not measured" and "too few problems (8" in few.summary


def test_design_minimum_and_power():
    assert C.min_problems_for(0.05, 8) == 9  # 2/2^9 = 0.0039 ≤ 0.05/8 = 0.00625 < 2/2^8
    assert Criteria().min_problems >= C.min_problems_for(Criteria().alpha, C.N_CHECKS)
    small, big = C.design(12, 8, 0.10), C.design(60, 16, 0.10)
    assert small.power < 0.2 < 0.9 < big.power
    assert C.design(8, 16).power == 0.0 and "below the minimum" in C.design(8, 16).text()
    assert "power to detect an accuracy gain of +0.1" in big.text() and "family-wise error" in big.text()
    # hand check of the normal approximation at 60 × 16, v = 0.2, δ = 0.1, z = z(0.05/16):
    sigma2 = 2 * 0.2 / 16
    z = normal_upper_quantile(0.05 / 16)
    thr = z * math.sqrt((sigma2 + 0.01) / 60)
    assert big.power == pytest.approx(1 - normal_cdf((thr - 0.1) / math.sqrt(sigma2 / 60)))
    assert normal_upper_quantile(0.025) == pytest.approx(1.959964, abs=1e-5)
