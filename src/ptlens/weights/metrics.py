"""Pure weight metrics: raw sums → DESIGN.md metrics, and spectral metrics of matrices.

Nothing here reads a file. Element-wise metrics are ratios of sums (``kernels`` produces the
sums), which is what makes every aggregate parameter-weighted: add the sums, then divide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

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


# --------------------------------------------------------------------------- spectral

RowChunks = Callable[[], Iterator[torch.Tensor]]
"""A matrix given as a function returning its row blocks in order (float32, one device)."""


@dataclass
class LowRank:
    """Top-k singular triplets (U may be None when only values were needed)."""

    S: torch.Tensor
    V: torch.Tensor
    U: torch.Tensor | None = None


def _orth(y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(y, mode="reduced").Q


Blocks = Callable[[], Iterator[list[torch.Tensor]]]
"""Several matrices of one shape, given together one row block at a time (one pass = one call)."""


def randomized_svd_many(blocks: Blocks, shape: tuple[int, int], count: int, k: int, *, oversample: int = 10,
                        power_iters: int = 3, seed: int = 0, device: torch.device | str = "cpu",
                        materialize_below: int = 1 << 16) -> list[LowRank]:
    """Top-k SVDs of ``count`` matrices seen only through row blocks (Halko et al. 2011, Alg. 4.4).

    The matrices advance in lockstep: each pass streams the row blocks once and serves all of
    them, so a tensor's checkpoints are read once per pass however many SVDs they feed, and a
    vocabulary-sized matrix never needs to be whole in memory. One test matrix Ω serves every
    matrix, so identical inputs give identical subspaces. Accuracy depends on the spectrum's
    decay: with the defaults (10 extra columns, 3 power iterations) the top-16 values of a
    decaying spectrum are within ~1e-3, those of a noise-like one (no gap) within ~5%;
    ``--spectral full`` is exact. Small or thin matrices are decomposed exactly.
    """
    m, n = shape
    k = min(k, m, n)
    ell = min(k + oversample, m, n)
    if m * n <= materialize_below or ell >= min(m, n) // 2:
        parts: list[list[torch.Tensor]] = [[] for _ in range(count)]
        for bl in blocks():  # a block may live in a reused buffer: copy it before asking for the next
            for i, c in enumerate(bl):
                parts[i].append(c.to(device=device, dtype=torch.float32, copy=True))
        mats = [torch.cat(ps, dim=0) for ps in parts]
        out = []
        for A in mats:
            U, S, Vh = torch.linalg.svd(A, full_matrices=False)
            out.append(LowRank(S=S[:k], V=Vh[:k].T.contiguous(), U=U[:, :k].contiguous()))
        return out
    g = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn((n, ell), generator=g).to(device)

    def range_pass(right: list[torch.Tensor]) -> list[torch.Tensor]:
        ys: list[list[torch.Tensor]] = [[] for _ in range(count)]
        for bl in blocks():
            for i, c in enumerate(bl):
                ys[i].append(c @ right[i])
        return [_orth(torch.cat(y, dim=0)) for y in ys]

    def left_pass(Qs: list[torch.Tensor]) -> list[torch.Tensor]:
        acc = [torch.zeros((ell, n), device=device) for _ in range(count)]
        r0 = 0
        for bl in blocks():
            rows = bl[0].shape[0]
            for i, c in enumerate(bl):
                acc[i] += Qs[i][r0:r0 + rows].T @ c
            r0 += rows
        return acc

    Qs = range_pass([omega] * count)
    for _ in range(power_iters):
        Zs = [_orth(z.T) for z in left_pass(Qs)]
        Qs = range_pass(Zs)
    out = []
    for Q, B in zip(Qs, left_pass(Qs)):
        Ub, S, Vh = torch.linalg.svd(B, full_matrices=False)
        out.append(LowRank(S=S[:k], V=Vh[:k].T.contiguous(), U=(Q @ Ub[:, :k]).contiguous()))
    return out


def randomized_svd(rows: RowChunks, shape: tuple[int, int], k: int, **kw) -> LowRank:
    """Top-k SVD of one matrix given as row blocks (see ``randomized_svd_many``)."""
    return randomized_svd_many(lambda: ([b] for b in rows()), shape, 1, k, **kw)[0]


def all_singular_values(rows: RowChunks, device: torch.device | str = "cpu") -> torch.Tensor:
    """Every singular value (``--spectral full``): the matrix is materialised in float32."""
    A = torch.cat(list(rows()), dim=0).to(device=device, dtype=torch.float32)
    return torch.linalg.svdvals(A)


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


def _bins(values: torch.Tensor) -> torch.Tensor:
    """Order-preserving bucket of non-negative float32 values: their top 16 bits."""
    return values.contiguous().view(torch.int32) >> 15


def principal_overlap(recon_rows: RowChunks, changed_rows: RowChunks, total: int,
                      alpha: float = 0.05) -> list[tuple[float | None, int, int]]:
    """(|P ∩ C| / |C|) / α per changed mask, P = the top-α entries of |rank-k W_A|.

    ``changed_rows`` yields, for each row block of ``recon_rows``, a bool tensor of shape
    (masks, rows, cols): one mask per transition out of A. The top-α set is selected exactly
    without holding the matrix: a first pass counts |R| in 2¹⁶ order-preserving buckets to
    find the bucket that holds the threshold; a second pass counts changed entries above it
    and sorts only that bucket's entries. Returns (overlap, |P ∩ C|, |C|) per mask.
    """
    kth = max(1, int(round(alpha * total)))
    hist = torch.zeros(_BINS, dtype=torch.long)
    for r in recon_rows():
        hist += torch.bincount(_bins(r.abs().float()).reshape(-1), minlength=_BINS).cpu()
    above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])  # entries in bins >= i
    edge = int(torch.nonzero(above >= kth).max())
    need = kth - (int(above[edge + 1]) if edge + 1 < _BINS else 0)
    inter = changed_total = None
    edge_vals, edge_flags = [], []
    for r, c in zip(recon_rows(), changed_rows()):
        a = r.abs().float()
        b = _bins(a)
        c = c.reshape(c.shape[0], *b.shape)
        above_edge = b > edge
        n_c = torch.stack([torch.count_nonzero(m) for m in c]).cpu()
        n_i = torch.stack([torch.count_nonzero(m & above_edge) for m in c]).cpu()
        changed_total = n_c if changed_total is None else changed_total + n_c
        inter = n_i if inter is None else inter + n_i
        sel = b == edge
        edge_vals.append(a[sel].cpu())
        edge_flags.append(c[:, sel].cpu())
    order = torch.argsort(torch.cat(edge_vals), descending=True, stable=True)[:need]
    inter = inter + torch.cat(edge_flags, dim=1)[:, order].sum(1)
    out = []
    for i, n_c in zip(inter.tolist(), changed_total.tolist()):
        out.append(((i / n_c) / alpha if n_c else None, int(i), int(n_c)))
    return out
