"""Spectral metrics of weight matrices and their updates: randomized and exact SVDs, angles, overlaps.

Pure functions of matrices given as row blocks (nothing here opens a file); torch does the linear
algebra, on CPU or GPU. Element-wise metrics live in ``metrics``, which does not import torch.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

RowChunks = Callable[[], Iterator[torch.Tensor]]
"""A matrix given as a function returning its row blocks in order (float32, one device)."""


@dataclass
class LowRank:
    """Top-k singular triplets (U may be None when only values were needed).

    ``err`` is a per-value error estimate of ``S`` (zeros when ``S`` is exact); see
    ``randomized_svd_many`` for what it bounds.
    """

    S: torch.Tensor
    V: torch.Tensor
    U: torch.Tensor | None = None
    err: torch.Tensor | None = None
    history: torch.Tensor | None = None


def _orth(y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(y, mode="reduced").Q


@contextmanager
def _one_cpu_thread(device):
    """Small factorizations (QR of m × ℓ, SVD of ℓ(q+1) × n) on one thread.

    On a busy 2-core machine LAPACK on 2 threads waited for its second thread: an SVD of a
    130 × 1024 matrix took 0.7–3.2 s on 2 threads against 0.07 s on 1 (measured). The big
    products keep the caller's thread count.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


Blocks = Callable[[], Iterator[list[torch.Tensor]]]
"""Several matrices of one shape, given together one row block at a time (one pass = one call)."""


def exact_svd(A: torch.Tensor, k: int, *, values_only: bool = False) -> LowRank:
    """Exact SVD: every singular value, and the top-k singular vectors unless ``values_only``.

    float64 up to 2^24 entries (the values and vectors then agree with LAPACK in float64 to
    ~1e-12), float32 beyond, where float64 would double an already large memory footprint.
    """
    dt = torch.float64 if A.numel() <= EXACT_FLOAT64_MAX else torch.float32
    A = A.to(dt)
    if values_only:
        S = torch.linalg.svdvals(A)
        return LowRank(S=S, V=torch.empty(0), err=torch.zeros_like(S))
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    k = min(k, len(S))
    return LowRank(S=S, V=Vh[:k].T.contiguous(), U=U[:, :k].contiguous(), err=torch.zeros_like(S))


EXACT_FLOAT64_MAX = 1 << 24


def randomized_svd_many(blocks: Blocks, shape: tuple[int, int], count: int, k: int, *, oversample: int = 10,
                        power_iters: int = 4, seed: int = 0, device: torch.device | str = "cpu",
                        materialize_below: int = 1 << 16) -> list[LowRank]:
    """Top-k SVDs of ``count`` matrices seen only through row blocks, by randomized block Krylov.

    Block Krylov (Musco & Musco 2015): the range basis is every block of
    [AΩ, (AAᵀ)AΩ, …, (AAᵀ)^q AΩ] (block size ℓ = k + oversample, q = ``power_iters``), kept
    orthonormal block by block, and the values are those of QᵀA (Rayleigh–Ritz). It reads
    each matrix 2q + 2 times, like q power iterations, and multiplies by ℓ columns per pass
    (QᵀA is assembled from each block's own left product), but keeps every intermediate
    block instead of only the last, which is what makes flat (noise-like) spectra converge.

    Values and error estimate (``krylov_extrapolate``): Ritz values are lower bounds,
    σ̃_i ≤ σ_i, and grow with the Krylov space; the bases are nested, so the values of every
    smaller space come free from the leading rows of QᵀA (``history``). ``S`` is the last
    Ritz value plus the extrapolated remaining gain, ``err`` an estimate (not a rigorous
    bound) of |S − σ_i|; docs/validation/weights.md tables both against exact spectra.

    The matrices advance in lockstep: each pass streams the row blocks once and serves all of
    them, so a tensor's checkpoints are read once per pass however many SVDs they feed, and a
    vocabulary-sized matrix never needs to be whole in memory. One test matrix Ω serves every
    matrix, so identical inputs give identical subspaces. Small or thin matrices are
    decomposed exactly.
    """
    m, n = shape
    k = min(k, m, n)
    ell = min(k + oversample, m, n)
    q = max(0, power_iters)
    if m * n <= materialize_below or ell * (q + 1) >= min(m, n) // 2:
        parts: list[list[torch.Tensor]] = [[] for _ in range(count)]
        for bl in blocks():  # a block may live in a reused buffer: copy it before asking for the next
            for i, c in enumerate(bl):
                parts[i].append(c.to(device=device, dtype=torch.float32, copy=True))
        out = []
        for ps in parts:
            low = exact_svd(torch.cat(ps, dim=0), k)
            out.append(LowRank(S=low.S[:k].float(), V=low.V.float(), U=low.U.float(), err=low.err[:k].float()))
        return out
    g = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn((n, ell), generator=g).to(device)

    def range_pass(right: list[torch.Tensor]) -> list[torch.Tensor]:
        ys = [torch.empty((m, r.shape[1]), device=device) for r in right]  # filled in place: no list + cat copy
        r0 = 0
        for bl in blocks():
            rows = bl[0].shape[0]
            for i, c in enumerate(bl):
                torch.matmul(c, right[i], out=ys[i][r0:r0 + rows])
            r0 += rows
        return ys

    def left_pass(Qs: list[torch.Tensor]) -> list[torch.Tensor]:
        acc = [torch.zeros((Q.shape[1], n), device=device) for Q in Qs]
        r0 = 0
        for bl in blocks():
            rows = bl[0].shape[0]
            for i, c in enumerate(bl):
                acc[i] += Qs[i][r0:r0 + rows].T @ c
            r0 += rows
        return acc

    width = ell * (q + 1)

    def extend(basis: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        """Append y's directions to an orthonormal basis (block Gram–Schmidt, twice is enough).

        The basis lives in one m × ℓ(q + 1) buffer, allocated once and filled block by block:
        appending by concatenation held the old and the new basis at once (2× the basis)."""
        if basis is None:
            buf = torch.empty((m, width), device=y.device, dtype=y.dtype)
            buf[:, :ell] = _orth(y)
            return buf[:, :ell]
        for _ in range(2):
            y = y - basis @ (basis.T @ y)
        blk = _orth(y)
        blk = _orth(blk - basis @ (basis.T @ blk))
        c = basis.shape[1]
        full = basis.as_strided((m, width), basis.stride())  # the whole buffer (a view of the same storage)
        full[:, c:c + blk.shape[1]] = blk
        return full[:, :c + blk.shape[1]]

    def small():
        return _one_cpu_thread(device)

    ys = range_pass([omega] * count)
    with small():
        bases = [extend(None, y) for y in ys]
    rows_of_B: list[list[torch.Tensor]] = [[] for _ in range(count)]  # Q_jᵀA, block by block
    for _ in range(q):
        lefts = left_pass([b[:, -ell:] for b in bases])
        for i, z in enumerate(lefts):
            rows_of_B[i].append(z)
        with small():
            Zs = [_orth(z.T) for z in lefts]
        ys = range_pass(Zs)
        with small():
            bases = [extend(b, y) for b, y in zip(bases, ys)]
    for i, z in enumerate(left_pass([b[:, -ell:] for b in bases])):  # a block, once appended, never changes:
        rows_of_B[i].append(z)                                     # QᵀA is the blocks' own left products
    out = []
    for Q, B in zip(bases, (torch.cat(r, dim=0) for r in rows_of_B)):
        # B = QᵀA is wide (ℓ(q+1) ≪ n rows). Bᵀ = Q_b R, so B = Rᵀ Q_bᵀ: B's values and left vectors are those
        # of the small Rᵀ, its right vectors Q_b times Rᵀ's. And B's first c rows are R[:c, :c]ᵀ Q_b[:, :c]ᵀ
        # (R is triangular), so every nested space's Ritz values come from R's leading blocks. One
        # multithreaded QR instead of q + 1 single-threaded SVDs of wide matrices: a third of the pass before.
        Qb, R = torch.linalg.qr(B.T, mode="reduced")
        with small():
            Ur, S, Vrh = torch.linalg.svd(R.T)
            hist = torch.stack([torch.linalg.svdvals(R[: ell * j, : ell * j])[:k] for j in range(1, q + 1)] + [S[:k]])
            value, err = krylov_extrapolate(hist)
        out.append(LowRank(S=value, V=(Qb @ Vrh[:k].T).contiguous(), U=(Q @ Ur[:, :k]).contiguous(), err=err,
                           history=hist))
    return out


def krylov_extrapolate(hist: torch.Tensor, max_ratio: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """A-posteriori correction of Ritz values from their growth over nested Krylov spaces.

    ``hist[j]`` holds the top-k Ritz values of the space of j + 1 blocks. They increase
    towards σ_i; when the last two gains shrink geometrically (ratio ρ = d_q / d_{q−1}), the
    gain still to come is d_q ρ / (1 − ρ) (Aitken). Returns (values + that gain, error
    estimate = max(2 × max(that gain, d_q), 1e-5 σ₁ for float32 rounding)). Ritz values
    alone sit below the truth by 1–4% on flat spectra (always below: the one-sided bias the
    issue found); the corrected values are within 1% (docs/validation/weights.md).
    """
    last = hist[-1]
    floor = FLOAT32_FLOOR * last[:1].clamp_min(0.0)
    if hist.shape[0] < 2:
        return last.clone(), last.clone()
    d2 = (hist[-1] - hist[-2]).clamp_min(0.0)
    if hist.shape[0] < 3:
        return last.clone(), torch.maximum(d2, floor)
    d1 = (hist[-2] - hist[-3]).clamp_min(0.0)
    rho = torch.where(d1 > 0, d2 / torch.where(d1 > 0, d1, 1.0), torch.zeros_like(d2)).clamp(0.0, max_ratio)
    gain = d2 * rho / (1 - rho)
    return last + gain, torch.maximum(ERR_FACTOR * torch.maximum(gain, d2), floor)


ERR_FACTOR = 2.0
"""Safety factor on the extrapolated gain: on exact spectra the true error reached 1.2× the gain."""
FLOAT32_FLOOR = 1e-5
"""Smallest error claimed, relative to σ₁: float32 products over thousands of terms are not exact."""


def randomized_svd(rows: RowChunks, shape: tuple[int, int], k: int, **kw) -> LowRank:
    """Top-k SVD of one matrix given as row blocks (see ``randomized_svd_many``)."""
    return randomized_svd_many(lambda: ([b] for b in rows()), shape, 1, k, **kw)[0]


def delta_spectrum(S: torch.Tensor, frob2: float, shape: tuple[int, int], full: bool,
                   ks: tuple[int, ...] = (1, 16)) -> dict[str, float | None]:
    """stable rank, top-k energy and (with every σ) effective rank and rank fraction of Δ."""
    S = S.double().cpu()
    out: dict[str, float | None] = {}
    s1 = float(S[0]) if len(S) else 0.0
    out["stable_rank"] = frob2 / (s1 * s1) if s1 > 0 else None
    for k in ks:
        out[f"top{k}_energy"] = float((S[:k] ** 2).sum() / frob2) if frob2 > 0 else None
    if full:
        total = float(S.sum())
        if total > 0:
            p = S / total
            p = p[p > 0]
            out["effective_rank"] = float(torch.exp(-(p * p.log()).sum()))
            tol = s1 * max(shape) * float(np.finfo(np.float32).eps)
            out["rank_fraction"] = float((S > tol).sum()) / min(shape)
        else:
            out["effective_rank"] = None
            out["rank_fraction"] = 0.0
    return out


def spectrum_errors(S: torch.Tensor, err: torch.Tensor | None, frob2: float,
                    ks: tuple[int, ...] = (1, 16)) -> dict[str, float | None]:
    """σ₁ of Δ and the error estimates of σ₁, stable rank and top-k energy carried from ``err`` of S.

    With σ_i known to ± e_i: stable rank's error is its value at σ₁ − e₁ minus its value at σ₁
    (the larger side), top-k energy's is Σ_{i≤k} (2σ_i e_i + e_i²) / ‖Δ‖_F².
    """
    S = S.double().cpu()
    e = torch.zeros_like(S) if err is None else err.double().cpu()[: len(S)]
    out: dict[str, float | None] = {"sigma1": float(S[0]) if len(S) else None,
                                    "sigma1_err": float(e[0]) if len(S) else None}
    s1, e1 = (float(S[0]), float(e[0])) if len(S) else (0.0, 0.0)
    out["stable_rank_err"] = (frob2 / (s1 - e1) ** 2 - frob2 / s1 ** 2) if s1 > e1 and frob2 > 0 else None
    for k in ks:
        out[f"top{k}_energy_err"] = float((2 * S[:k] * e[:k] + e[:k] ** 2).sum() / frob2) if frob2 > 0 else None
    return out


def principal_angles_deg(Ua: torch.Tensor, Ub: torch.Tensor) -> tuple[float, float]:
    """Mean and max principal angle (degrees) between the column spaces of Ua and Ub.

    Small angles come from sines (Björck & Golub 1973): arccos of a cosine near 1 would turn
    float rounding into spurious fractions of a degree.
    """
    Ua, Ub = Ua.double(), Ub.double()
    M = Ua.T @ Ub
    cos = torch.linalg.svdvals(M).clamp(0.0, 1.0)
    sin = torch.linalg.svdvals(Ub - Ua @ M).clamp(0.0, 1.0).flip(0)[: len(cos)]
    theta = torch.where(cos * cos >= 0.5, torch.arcsin(sin), torch.arccos(cos))
    theta = torch.rad2deg(theta)
    return float(theta.mean()), float(theta.max())


def spectral_drift(Sa: torch.Tensor, Sb: torch.Tensor) -> float | None:
    """mean_i |σ_i(W_B) − σ_i(W_A)| / σ_i(W_A) over the top k."""
    k = min(len(Sa), len(Sb))
    Sa, Sb = Sa[:k].double(), Sb[:k].double()
    ok = Sa > 0
    if not bool(ok.any()):
        return None
    return float(((Sb[ok] - Sa[ok]).abs() / Sa[ok]).mean())


_BINS = 1 << 16
_LOW = 15  # bits below a bucket: a bucket's entries are told apart by these (float32: 31 bits of a value ≥ 0)


def _bins(values: torch.Tensor) -> torch.Tensor:
    """Order-preserving bucket of non-negative float32 values: their top 16 bits."""
    return values.contiguous().view(torch.int32) >> _LOW


def principal_overlap(recon_rows: RowChunks, changed_rows: RowChunks, total: int,
                      alpha: float = 0.05) -> list[tuple[float | None, int, int]]:
    """(|P ∩ C| / |C|) / α per changed mask; see ``principal_overlap_threshold``."""
    return principal_overlap_threshold(recon_rows, changed_rows, total, alpha)[0]


def principal_overlap_threshold(recon_rows: RowChunks, changed_rows: RowChunks, total: int,
                                alpha: float = 0.05) -> tuple[list[tuple[float | None, int, int]], float]:
    """(|P ∩ C| / |C|) / α per changed mask, P = the top-α entries of |rank-k W_A|.

    ``changed_rows`` yields, for each row block of ``recon_rows``, a bool tensor of shape
    (masks, rows, cols): one mask per transition out of A. The top-α set is selected exactly
    in memory that does not grow with the matrix (a few counters of 2¹⁵–2¹⁶ bins per mask,
    plus one block's temporaries): a first pass counts |R| in 2¹⁶ order-preserving buckets (the
    top 16 bits of the float32 value) to find the bucket that holds the threshold; a second pass
    counts changed entries above it and histograms that bucket's entries by their low 15 bits,
    i.e. by exact value, which fixes the threshold value. Entries equal to the threshold are
    taken in row-major order up to α·total; only when that cuts through them does a third pass
    count the changed ones among the first. (Before, the edge bucket's entries were gathered
    and sorted: ~0.1–0.2% of the matrix, 2–4M entries for 128256 × 16384.) Returns (overlap,
    |P ∩ C|, |C|) per mask, and the threshold: the α·total-th largest |R| (the null's P uses it
    on sampled rows).
    """
    kth = max(1, int(round(alpha * total)))
    hist = torch.zeros(_BINS, dtype=torch.long)
    for r in recon_rows():
        hist += torch.bincount(_bins(r.abs().float()).reshape(-1), minlength=_BINS).cpu()
    above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])  # entries in bins >= i
    edge = int(torch.nonzero(above >= kth).max())
    need = kth - (int(above[edge + 1]) if edge + 1 < _BINS else 0)
    low_bins = 1 << _LOW
    inter = changed_total = low_hist = low_changed = None
    for r, c in zip(recon_rows(), changed_rows()):
        a = r.abs().float()
        b = _bins(a)
        c = c.reshape(c.shape[0], *b.shape)
        above_edge = b > edge
        n_c = torch.stack([torch.count_nonzero(m) for m in c]).cpu()
        n_i = torch.stack([torch.count_nonzero(m & above_edge) for m in c]).cpu()
        sel = b == edge
        low = (a[sel].view(torch.int32) & (low_bins - 1)).long()
        h = torch.bincount(low, minlength=low_bins).cpu()
        hc = torch.stack([torch.bincount(low[m[sel]], minlength=low_bins) for m in c]).cpu()
        if inter is None:
            inter, changed_total, low_hist, low_changed = n_i, n_c, h, hc
        else:
            inter, changed_total, low_hist, low_changed = inter + n_i, changed_total + n_c, low_hist + h, low_changed + hc
    above_low = torch.flip(torch.cumsum(torch.flip(low_hist, [0]), 0), [0])
    e2 = int(torch.nonzero(above_low >= need).max())
    ties = need - (int(above_low[e2 + 1]) if e2 + 1 < low_bins else 0)  # entries equal to the threshold in P
    value = torch.tensor([(edge << _LOW) | e2], dtype=torch.int32).view(torch.float32)
    threshold = float(value)
    inter = inter + low_changed[:, e2 + 1:].sum(1)
    if ties == int(low_hist[e2]):
        inter = inter + low_changed[:, e2]
    else:  # P takes the first ``ties`` of the entries equal to the threshold, in row-major order
        left = ties
        for r, c in zip(recon_rows(), changed_rows()):
            if left == 0:
                break
            eq = (r.abs().float() == value.to(r.device)).reshape(-1)
            pos = torch.nonzero(eq).reshape(-1)[:left]
            inter = inter + c.reshape(c.shape[0], -1)[:, pos].sum(1).cpu()
            left -= len(pos)
    out = []
    for i, n_c in zip(inter.tolist(), changed_total.tolist()):
        out.append(((i / n_c) / alpha if n_c else None, int(i), int(n_c)))
    return out, threshold
