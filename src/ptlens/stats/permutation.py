"""The paired sign-flip permutation test over problems: exact under exchangeability, for any number of problems."""

from __future__ import annotations

import math

import numpy as np

from ptlens.stats.statistic import as_additive


def flip_patterns(n_problems: int, n_perm: int = 2000, seed: int = 0) -> np.ndarray:
    """(N, n_problems) 0/1 rows, 1 = swap the two models' samples of that problem.

    Every one of the 2^P patterns when that is ≤ ``n_perm`` (the complete, exact test), else
    ``n_perm`` uniform random patterns (a Monte-Carlo test, still exact with the +1 p-value of
    :func:`paired_test`). Shared by all metrics and pairs, like the bootstrap resamples.
    """
    if n_problems <= 0:
        return np.zeros((0, 0))
    if 2 ** n_problems <= n_perm:
        codes = np.arange(2 ** n_problems)[:, None]
        return ((codes >> np.arange(n_problems)[None, :]) & 1).astype(float)
    return np.random.default_rng(seed).integers(0, 2, size=(n_perm, n_problems)).astype(float)


def is_complete(flips: np.ndarray) -> bool:
    return flips.shape[0] == 2 ** flips.shape[1]


def paired_test(stat_b, stat_a, flips: np.ndarray) -> float | None:
    """Two-sided p-value of B − A by swapping the two models' samples within problems (sign-flip test).

    Why: under the null that both models have the same answer distribution on each problem,
    which model produced a problem's samples is exchangeable, so the swap distribution is the
    exact null distribution of the statistic with any number of problems — unlike percentile
    bootstrap intervals, which under-cover with few problems. Works for any metric of column
    sums (ratios of sums, ECE); None for others (medians) or an undefined difference.
    Complete enumeration: p = share of patterns with |T| ≥ |T_obs|; random patterns:
    p = (1 + count) / (1 + N) (Phipson & Smyth 2010), valid for any N.
    """
    a, b = as_additive(stat_a), as_additive(stat_b)
    if a is None or b is None or a.cols.shape != b.cols.shape:
        return None
    t0 = float(b.value()) - float(a.value())
    if not math.isfinite(t0):
        return None
    keep = 1.0 - flips
    with np.errstate(divide="ignore", invalid="ignore"):
        t = b.f(keep @ b.cols + flips @ a.cols) - a.f(keep @ a.cols + flips @ b.cols)
    t = np.where(np.isfinite(t), t, 0.0)
    hits = int(np.sum(np.abs(t) >= abs(t0) - 1e-12 * max(1.0, abs(t0))))
    if is_complete(flips):
        return min(1.0, hits / flips.shape[0])
    return (1 + hits) / (1 + flips.shape[0])


def smallest_p(n_problems: int) -> float:
    """The smallest two-sided p-value the complete sign-flip test can give: 2 / 2^P."""
    return 2.0 / 2.0 ** n_problems
