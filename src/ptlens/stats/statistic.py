"""Metrics as functions of per-problem sums, so that 1000 resamples or 2000 swaps are one matrix product.

A metric here is a :class:`Statistic` (Σ_p num_p / Σ_p den_p, then a transform), an :class:`Additive`
(any function of per-problem column sums: ECE), a :class:`Batched` function of resample weights
(a median), or a plain function of one weight vector; :func:`evaluate` evaluates any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Statistic:
    """A metric as Σ_p num_p / Σ_p den_p over problems, then ``transform``; bootstraps by reweighting.

    Means over problems, means over samples and token-weighted means all take this form, which
    keeps 1000 bootstrap resamples one matrix product.
    """

    num: np.ndarray
    den: np.ndarray
    transform: Callable[[np.ndarray], np.ndarray] | None = None

    def value(self, weights: np.ndarray | None = None) -> np.ndarray | float:
        if weights is None:
            num, den = np.nansum(self.num), np.nansum(self.den)
        else:
            num, den = weights @ np.nan_to_num(self.num), weights @ np.nan_to_num(self.den)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.asarray(num, dtype=float) / den
        return self.transform(r) if self.transform else r

    @classmethod
    def mean(cls, per_problem: Sequence[float]) -> "Statistic":
        v = np.asarray(per_problem, dtype=float)
        return cls(np.where(np.isnan(v), 0.0, v), (~np.isnan(v)).astype(float))


@dataclass(frozen=True)
class Additive:
    """A metric ``f(Σ_p cols[p])`` of per-problem column sums (ECE, or any ratio of sums).

    Both a bootstrap resample (weights @ cols) and a swap of two models' samples on some problems
    (one model's columns on some rows, the other's on the rest) are then one matrix product.
    """

    cols: np.ndarray
    f: Callable[[np.ndarray], np.ndarray]

    def value(self, weights: np.ndarray | None = None) -> np.ndarray | float:
        s = self.cols.sum(axis=0) if weights is None else weights @ self.cols
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.f(s)


def as_additive(stat) -> Additive | None:
    """``stat`` as per-problem column sums, or None when it is not of that form (a median)."""
    if isinstance(stat, Additive):
        return stat
    if isinstance(stat, Statistic):
        t = stat.transform or (lambda r: r)
        return Additive(np.stack([np.nan_to_num(np.asarray(stat.num, dtype=float)),
                                  np.nan_to_num(np.asarray(stat.den, dtype=float))], axis=1),
                        lambda s: t(np.asarray(s[..., 0], dtype=float) / s[..., 1]))
    return None


@dataclass(frozen=True)
class Batched:
    """A statistic evaluated for all resamples in one call: ``many(weights)`` → (n_boot,), ``one()`` → float."""

    many: Callable[[np.ndarray], np.ndarray]
    one: Callable[[], float]


def evaluate(stat, weights):
    """``stat`` at ``weights``: None gives the point value, a (n_boot, n_problems) matrix every resample's."""
    if isinstance(stat, (Statistic, Additive)):
        return stat.value(weights)
    if isinstance(stat, Batched):
        return stat.one() if weights is None else stat.many(weights)
    if weights is None:
        return stat(None)
    return np.array([stat(w) for w in weights])


def ratio_standard_error(num: np.ndarray, den: np.ndarray) -> float:
    """Standard error of Σnum ÷ Σden over independent clusters (here problems, their samples together): the
    delta method, sqrt(m/(m−1) · Σ(num_i − R·den_i)²) ÷ Σden; nan below 2 clusters."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    m = len(num)
    if m < 2 or den.sum() <= 0:
        return math.nan
    r = num.sum() / den.sum()
    return float(math.sqrt(m / (m - 1) * ((num - r * den) ** 2).sum()) / den.sum())
