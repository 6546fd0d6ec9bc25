"""Multiple comparisons: Holm's step-down adjustment, Bonferroni tails, and what the exact test can reject."""

from __future__ import annotations

from typing import Sequence


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None, and is not counted).

    Why Holm: it keeps the family-wise error ≤ α under any dependence between the checks (length,
    entropy and distinct-n of one model are strongly correlated), and rejects at least what
    Bonferroni rejects. Adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)).
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def rejectable_from(alpha: float, n_checks: int) -> int:
    """Fewest problems at which the exact sign-flip test can reject at Holm's first threshold α/m at all
    (its smallest two-sided p-value is 2/2^P, :func:`ptlens.stats.permutation.smallest_p`)."""
    p = 1
    while 2.0 / 2.0 ** p > alpha / n_checks:
        p += 1
    return p


def bonferroni_lower_tails(family: int, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile tails of a one-sided lower bound at level 1 − α/``family`` (Bonferroni over ``family`` claims
    read together), for :func:`ptlens.stats.bootstrap.estimate`: its ``lo`` is the bound, its ``hi`` the maximum."""
    return (100 * alpha / max(1, family), 100.0)
