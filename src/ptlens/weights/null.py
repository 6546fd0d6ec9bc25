"""Null baselines: what an update with no structure would score on each weight metric.

The null update of a tensor and transition A → B is i.i.d. Gaussian noise ε with
‖ε‖_F = ‖ΔW‖_F (the transition's own, over the rows both checkpoints share), added to W_A
and stored in B's dtype (round to nearest even, as torch casts). Rounding is what makes the
null matter: in bfloat16 a small update only survives on small weights, so "few entries
changed", "changed entries are small ones" and "the update avoids principal weights" all
appear from noise. Observed values are read against these.

How each null is obtained (docs/validation/weights.md):

- ``changed_exact``, ``changed_tol``, ``changed_magnitude_ratio``: simulated on a seeded
  sample of W_A's rows (≥ ``SAMPLE_ENTRIES`` entries, or the whole tensor when smaller);
  the shares' binomial standard error is ≤ 0.5/√entries (0.2 percentage points at 2^16).
- ``principal_overlap``: the same simulated changes on the same rows, against the rows'
  entries of the rank-k reconstruction of W_A above the whole matrix's top-α threshold;
  normalised by the sample's own share of principal entries (a ratio estimator: a few rows
  hold few or many principal entries, and dividing by α would add that noise).
- ``stable_rank``: derived. The null's stored difference has independent zero-mean
  entries; with enough non-zeros per row and column (p·min(m, n) ≥ ``DENSE_NNZ``, p the
  simulated changed share) its top singular value sits at the Marchenko–Pastur /
  Bai–Yin edge √v(√m + √n), so stable rank = mn / (√m + √n)², whatever v (with the
  Tracy–Widom mean shift for small matrices, ``gaussian_stable_rank``). Sparser (tiny
  updates in bf16, most entries unchanged) σ₁ is driven by a few heavy rows or columns:
  then a sparse m × n matrix with the simulated share of non-zeros, values drawn from the
  simulated ones, is built and its σ₁ computed (scipy ``svds``).
- ``rank_fraction``: derived. A random pattern with continuous values has full rank on
  its non-empty rows and columns: min(E[non-empty rows], E[non-empty columns]) / min(m, n),
  with p from the simulation (1.0 for any dense update).
"""

from __future__ import annotations

import math
import zlib

from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from ptlens.weights.index import DTYPES, MANTISSA_BITS

if TYPE_CHECKING:
    import torch

SAMPLE_ENTRIES = 1 << 16
DENSE_NNZ = 30

# raw sample sums, scaled to the tensor's entry count so that aggregates add them
NS_EXACT, NS_TOL, NS_ABSA_CHANGED, NS_ABSA, NS_N = range(5)
NS_FIELDS = 5


def coarser(da: str, db: str) -> str:
    return da if MANTISSA_BITS[da] <= MANTISSA_BITS[db] else db


def bits(x: "torch.Tensor") -> "torch.Tensor":
    """Bit patterns of a float32 tensor, for bit-for-bit comparison."""
    import torch

    return x.contiguous().view(torch.int32)


def changed_mask(ra: "torch.Tensor", rb: "torch.Tensor", da: str, db: str) -> "torch.Tensor":
    """Entries whose stored values differ bit for bit, compared in the coarser stored dtype."""
    import torch

    if da == db:
        ia = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[ra.element_size()]
        return ra.view(ia) != rb.view(ia)
    coarse = DTYPES[coarser(da, db)]
    return bits(ra.to(coarse).float()) != bits(rb.to(coarse).float())


def sample_rows(rows: int, row_elems: int, seed: int, entries: int = SAMPLE_ENTRIES) -> np.ndarray:
    """Sorted, seeded row indices holding at least ``entries`` entries (every row when fewer)."""
    want = max(1, math.ceil(entries / max(1, row_elems)))
    if want >= rows:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size=want, replace=False))


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Standard normal draws (float32), seeded: the null's direction (scaled per transition).

    numpy's generator, not torch's: the element-wise scan runs without torch (``index.DTYPES``)."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def tensor_seed(name: str) -> int:
    return zlib.crc32(name.encode())


@njit(cache=True)
def _rne_bf16(u):
    """float32 bits → bfloat16 value's float32 bits, round to nearest even (torch's rule; NaN kept)."""
    if (u & 0x7F800000) == 0x7F800000 and (u & 0x007FFFFF) != 0:
        return u & np.uint32(0xFFFF0000)
    return (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)


@njit(cache=True)
def _simulate_kernel(xa, z, sigma, tol, store_bf16, compare_bf16, ch, d, out):
    """The null draw in one pass for bfloat16/float32 storage (the common case): see ``simulate``."""
    n = xa.shape[0]
    xb = xa.view(np.uint32)
    buf = np.empty(n, dtype=np.float32)
    bb = buf.view(np.uint32)
    sg = np.float32(sigma)
    for j in range(n):
        buf[j] = xa[j] + sg * z[j]
    if store_bf16:
        for j in range(n):
            bb[j] = _rne_bf16(bb[j])
    s_ex = 0.0
    s_tol = 0.0
    s_ach = 0.0
    s_a = 0.0
    for j in range(n):
        ua = xb[j]
        u = bb[j]
        if compare_bf16:
            changed = _rne_bf16(ua) != _rne_bf16(u)
        else:
            changed = ua != u
        diff = buf[j] - xa[j]
        d[j] = diff
        ch[j] = changed
        aa = abs(np.float64(xa[j]))
        s_a += aa
        if changed:
            s_ex += 1.0
            s_ach += aa
        if abs(diff) > tol:
            s_tol += 1.0
    out[NS_EXACT] = s_ex
    out[NS_TOL] = s_tol
    out[NS_ABSA_CHANGED] = s_ach
    out[NS_ABSA] = s_a
    out[NS_N] = n


def simulate(xa: np.ndarray, da: str, db: str, sigma: float, z: np.ndarray, tol: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One null draw on sampled rows of W_A: W_A + σz stored as ``db``.

    ``xa``: the rows' values as float32 (exact for every stored dtype but float64, whose null is drawn
    on its float32 rounding). Returns the sample sums (``NS_*``), the changed mask (compared like the observed
    metric: bit for bit in the coarser dtype) and the stored difference in float32, both shaped like
    ``xa``. bfloat16/float32 go through one compiled pass (same rounding as torch's cast,
    cross-checked in the tests); other dtypes through torch.
    """
    if da in ("BF16", "F32") and db in ("BF16", "F32"):
        flat = np.ascontiguousarray(xa, dtype=np.float32).reshape(-1)
        ch = np.empty(flat.shape[0], dtype=np.bool_)
        d = np.empty(flat.shape[0], dtype=np.float32)
        s = np.zeros(NS_FIELDS)
        _simulate_kernel(flat, np.ascontiguousarray(z, dtype=np.float32).reshape(-1), float(sigma), float(tol),
                         db == "BF16", coarser(da, db) == "BF16", ch, d, s)
        return s, ch.reshape(xa.shape), d.reshape(xa.shape)
    return simulate_torch(xa, da, db, sigma, z, tol)


def simulate_torch(xa: np.ndarray, da: str, db: str, sigma: float, z: np.ndarray, tol: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``simulate`` with torch ops, any dtype: the reference for the compiled pass."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(xa, dtype=np.float32))
    wa = x.to(DTYPES[da])
    stored = (x + sigma * torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))).to(DTYPES[db])
    ch = changed_mask(wa, stored, da, db)
    d = stored.float() - x
    absa = x.abs().double()
    s = np.zeros(NS_FIELDS)
    s[NS_EXACT] = float(ch.sum())
    s[NS_TOL] = float((d.abs() > tol).sum())
    s[NS_ABSA_CHANGED] = float(absa[ch].sum())
    s[NS_ABSA] = float(absa.sum())
    s[NS_N] = float(x.numel())
    return s, ch.numpy(), d.numpy()


def elementwise(ns: np.ndarray) -> dict[str, float | None]:
    """``changed_exact_null``, ``changed_tol_null``, ``changed_magnitude_ratio_null`` from (summed) sample sums."""
    n = ns[NS_N]
    if n <= 0:
        return {"changed_exact_null": None, "changed_tol_null": None, "changed_magnitude_ratio_null": None}
    mean_abs = ns[NS_ABSA] / n
    ratio = float((ns[NS_ABSA_CHANGED] / ns[NS_EXACT]) / mean_abs) if ns[NS_EXACT] > 0 and mean_abs > 0 else None
    return {"changed_exact_null": float(ns[NS_EXACT] / n), "changed_tol_null": float(ns[NS_TOL] / n),
            "changed_magnitude_ratio_null": ratio}


def principal_overlap_null(recon: np.ndarray, threshold: float, ch: np.ndarray) -> float | None:
    """(|P ∩ C| / |C|) / (|P| / n) on sampled rows: P = |rank-k W_A| ≥ the matrix's top-α threshold."""
    P = np.abs(recon) >= threshold
    n_p, n_c = int(P.sum()), int(ch.sum())
    if n_p == 0 or n_c == 0:
        return None
    return (int((P & ch).sum()) / n_c) / (n_p / P.size)


TW1_MEAN = -1.2065  # mean of the Tracy–Widom (β = 1) law


def gaussian_stable_rank(m: int, n: int) -> float:
    """Stable rank of an m × n matrix of i.i.d. zero-mean entries: mn / E[σ₁²] with unit variance.

    E[σ₁²] ≈ μ + s·E[TW₁], μ = (√(a−1) + √b)², s = (√(a−1) + √b)(1/√(a−1) + 1/√b)^{1/3}
    (Johnstone 2001, a = max(m, n), b = min(m, n)); for large m, n this is the Marchenko–Pastur
    edge, mn / (√m + √n)². The Tracy–Widom term matters for small matrices (−5% on 64 × 64).
    """
    a, b = max(m, n), min(m, n)
    if b < 2:
        return 1.0
    r = math.sqrt(a - 1) + math.sqrt(b)
    lam = r * r + r * (1 / math.sqrt(a - 1) + 1 / math.sqrt(b)) ** (1 / 3) * TW1_MEAN
    return min(float(b), m * n / lam)


def rank_nulls(d: np.ndarray, shape: tuple[int, int], seed: int) -> dict[str, float | None]:
    """``stable_rank_null`` and ``rank_fraction_null`` from the simulated stored difference on sampled rows."""
    m, n = shape
    flat = np.asarray(d).reshape(-1)
    nz = flat[flat != 0]
    p = nz.size / max(1, flat.size)
    if p == 0:
        return {"stable_rank_null": None, "rank_fraction_null": 0.0}
    rows_nonempty = m * -math.expm1(n * math.log1p(-p)) if p < 1 else m
    cols_nonempty = n * -math.expm1(m * math.log1p(-p)) if p < 1 else n
    rank_fraction = min(1.0, min(rows_nonempty, cols_nonempty) / min(m, n))
    if p * min(m, n) >= DENSE_NNZ:
        return {"stable_rank_null": gaussian_stable_rank(m, n), "rank_fraction_null": rank_fraction}
    import scipy.sparse as sp
    from scipy.sparse.linalg import svds

    rng = np.random.default_rng(seed)
    nnz = max(1, int(round(p * m * n)))
    pos = rng.choice(m * n, size=nnz, replace=False) if m * n <= 1 << 26 else np.unique(rng.integers(0, m * n, nnz))
    vals = rng.choice(nz.astype(np.float64), size=len(pos), replace=True)
    S = sp.csr_matrix((vals, (pos // n, pos % n)), shape=(m, n))
    frob2 = float((vals ** 2).sum())
    if min(m, n) <= 2:
        s1 = float(np.linalg.norm(S.toarray(), 2))
    else:
        s1 = float(svds(S, k=1, return_singular_vectors=False, random_state=seed)[0])
    return {"stable_rank_null": frob2 / (s1 * s1) if s1 > 0 else None, "rank_fraction_null": rank_fraction}
