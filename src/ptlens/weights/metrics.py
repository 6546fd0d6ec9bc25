"""Pure element-wise weight metrics: raw sums → the metrics of docs/METRICS.md (spectral ones: ``spectral``).

Nothing here reads a file, and nothing imports torch: a ``--spectral off`` scan never loads it.
Element-wise metrics are ratios of sums (``kernels`` produces the sums), which is what makes
every aggregate parameter-weighted: add the sums, then divide.
"""

from __future__ import annotations

import math
import numpy as np

from ptlens.weights import kernels as K


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def finalize(s: np.ndarray) -> dict[str, float | None]:
    """Element-wise metrics of one transition from its sums (one tensor or any set of them)."""
    n = s[K.N]
    norm_a, norm_b, dnorm = math.sqrt(s[K.SUM_A2]), math.sqrt(s[K.SUM_B2]), math.sqrt(s[K.SUM_D2])
    changed = _ratio(s[K.N_EXACT], n)
    mean_abs_changed = _ratio(s[K.SUM_ABSA_CHANGED], s[K.N_EXACT])
    mean_abs = _ratio(s[K.SUM_ABSA], n)
    return {
        "norm_a": norm_a,
        "norm_b": norm_b,
        "delta_norm": dnorm,
        "rel_change": _ratio(dnorm, norm_a),
        "rms_change": _ratio(dnorm, math.sqrt(n)) if n > 0 else None,
        "changed_exact": changed,
        "changed_tol": _ratio(s[K.N_TOL], n),
        "update_sparsity": None if changed is None else 1.0 - changed,
        "cosine_ab": _ratio(s[K.DOT_AB], norm_a * norm_b),
        "changed_magnitude_ratio": (mean_abs_changed / mean_abs)
        if mean_abs_changed is not None and mean_abs else None,
        "entries": int(n),
        "nonfinite": int(s[K.NONFINITE]),
    }


def delta_cosine(p: np.ndarray) -> float | None:
    """cos(Δ_T1, Δ_T2) from the pair sums (one tensor or a set of them)."""
    return _ratio(p[K.P_DOT], math.sqrt(p[K.P_D1] * p[K.P_D2]))
