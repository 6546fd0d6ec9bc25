"""Normal cdf and quantile, and the Wilson bound of a binomial rate: closed forms, no scipy at run time."""

from __future__ import annotations

import math


def normal_cdf(x: float) -> float:
    """Φ(x) of the standard normal."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def normal_upper_quantile(p_upper: float) -> float:
    """The standard normal quantile z with 1 − Φ(z) = p_upper (bisection; no scipy needed)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 1.0 - normal_cdf(mid) > p_upper:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def binomial_upper(k: int, n: int, z: float = 2.326) -> float:
    """Wilson upper bound of a binomial rate (one-sided, z = 2.326: 99%)."""
    if n == 0:
        return 1.0
    ph = k / n
    centre = ph + z * z / (2 * n)
    half = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    return (centre + half) / (1 + z * z / n)
