"""Bootstrap over problems: shared resample weights, percentile intervals, paired differences.

Problems are the independent unit (a problem's samples are correlated), so resamples draw problems;
one weight matrix shared by every metric and model makes the intervals of differences paired.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ptlens.stats.estimate import Estimate
from ptlens.stats.statistic import Statistic, evaluate

__all__ = ["Estimate", "estimate", "paired_difference", "resample_weights"]


def resample_weights(n_problems: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, n_problems) counts of each problem in each bootstrap resample; share it for paired intervals."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_problems, size=(n_boot, n_problems))
    w = np.zeros((n_boot, n_problems))
    np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0)
    return w


def estimate(stat: Statistic | Callable[[np.ndarray | None], float], weights: np.ndarray,
             tails: tuple[float, float] = (2.5, 97.5)) -> Estimate:
    """Point value and percentile interval (``tails``: the percentiles of its ends); ``stat`` is a Statistic or
    any function of weights."""
    point = float(evaluate(stat, None))
    reps = np.asarray(evaluate(stat, weights), dtype=float)
    reps = reps[np.isfinite(reps)]
    if not reps.size or not math.isfinite(point):
        return Estimate(point, float("nan"), float("nan"))
    lo, hi = np.percentile(reps, list(tails))
    return Estimate(point, float(lo), float(hi))


def paired_difference(stat_b: Statistic | Callable, stat_a: Statistic | Callable, weights: np.ndarray) -> Estimate:
    """B − A with a paired interval: the same problem resamples for both models."""
    point = float(evaluate(stat_b, None)) - float(evaluate(stat_a, None))
    reps = np.asarray(evaluate(stat_b, weights), dtype=float) - np.asarray(evaluate(stat_a, weights), dtype=float)
    reps = reps[np.isfinite(reps)]
    if not reps.size or not math.isfinite(point):
        return Estimate(point, float("nan"), float("nan"))
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Estimate(point, float(lo), float(hi))
