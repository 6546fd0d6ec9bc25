"""Element-wise statistics of every transition of a tensor chunk, in one pass.

``R`` holds the same chunk of one tensor from each checkpoint (raw bf16 or float32 bits, one
row per checkpoint, each row possibly its own file mapping); ``XB`` the bit patterns used for
bit-for-bit comparison (usually ``R`` itself; a rounded copy where two checkpoints store
different dtypes). For each transition
t = (a → b) the kernel accumulates, in float64, the raw sums below; ``metrics.finalize``
turns sums into the metrics of docs/METRICS.md, and ``aggregate`` adds sums across tensors so that
every aggregate is parameter-weighted by construction.

Two implementations with one contract: a fused numba loop (CPU; reads each value once for
all transitions) and a vectorised torch one (any device; also the reference in the tests).
Entries where either side is NaN/Inf are left out of every sum and counted in ``NONFINITE``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numba import njit, prange

if TYPE_CHECKING:
    import torch

SUM_A2, SUM_B2, DOT_AB, SUM_D2, N_EXACT, N_TOL, SUM_ABSA_CHANGED, SUM_ABSA, N, NONFINITE = range(10)
T_FIELDS = 10
P_DOT, P_D1, P_D2 = range(3)
P_FIELDS = 3
_TILE = 4096


_FAST = {"reassoc", "contract"}


@njit(cache=True, fastmath=_FAST, boundscheck=False)
def _decode_row(src, shift, dst):
    for j in range(src.shape[0]):
        dst[j] = np.uint32(src[j]) << shift


@njit(cache=True, fastmath=_FAST)
def _decode(R, shift, lo, hi, out):
    """Raw bit patterns → float32 tile: bf16 is the top half of a float32 (shift 16).

    Row by row on 1-D slices, which LLVM vectorises: indexing the 2-D tile inside the loop did not
    (3.5× slower, and half of the whole pass for a bf16 pair)."""
    for c in range(len(R)):
        _decode_row(R[c][lo:hi], np.uint32(shift), out[c, :hi - lo])


@njit(cache=True, fastmath=_FAST)
def _ckpt_sums(x, out):
    s2 = 0.0
    s1 = 0.0
    for j in range(x.shape[0]):
        v = np.float64(x[j])
        s2 += v * v
        s1 += abs(v)
    out[0] = s2
    out[1] = s1


@njit(cache=True, fastmath=_FAST)
def _trans_fast(xa, xb, ba, bb, tol, acc):
    """One transition over one tile, on 1-D rows: contiguous operands and float counters let LLVM vectorise."""
    s_ab = 0.0
    s_d2 = 0.0
    n_ex = 0.0
    n_tol = 0.0
    s_ach = 0.0
    for j in range(xa.shape[0]):
        fa = np.float64(xa[j])
        d = np.float64(xb[j] - xa[j])
        s_ab += fa * np.float64(xb[j])
        s_d2 += d * d
        ch = 1.0 if ba[j] != bb[j] else 0.0
        n_ex += ch
        n_tol += 1.0 if abs(d) > tol else 0.0
        s_ach += abs(fa) * ch
    acc[DOT_AB] = s_ab
    acc[SUM_D2] = s_d2
    acc[N_EXACT] = n_ex
    acc[N_TOL] = n_tol
    acc[SUM_ABSA_CHANGED] = s_ach
    acc[N] = xa.shape[0]
    acc[NONFINITE] = 0.0


@njit(cache=True)
def _trans_careful(xa, xb, ba, bb, tol, acc):
    for f in range(T_FIELDS):
        acc[f] = 0.0
    for j in range(xa.shape[0]):
        if not (np.isfinite(xa[j]) and np.isfinite(xb[j])):
            acc[NONFINITE] += 1
            continue
        d = np.float64(xb[j] - xa[j])
        fa = np.float64(xa[j])
        fb = np.float64(xb[j])
        acc[SUM_A2] += fa * fa
        acc[SUM_B2] += fb * fb
        acc[DOT_AB] += fa * fb
        acc[SUM_D2] += d * d
        ch = ba[j] != bb[j]
        acc[N_EXACT] += ch
        acc[N_TOL] += abs(d) > tol
        acc[SUM_ABSA_CHANGED] += abs(fa) * ch
        acc[SUM_ABSA] += abs(fa)
        acc[N] += 1


@njit(cache=True, fastmath=_FAST)
def _pair_fast(a1, b1, a2, b2, acc):
    s12 = 0.0
    s11 = 0.0
    s22 = 0.0
    for j in range(a1.shape[0]):
        d1 = np.float64(b1[j] - a1[j])
        d2 = np.float64(b2[j] - a2[j])
        s12 += d1 * d2
        s11 += d1 * d1
        s22 += d2 * d2
    acc[P_DOT] = s12
    acc[P_D1] = s11
    acc[P_D2] = s22


@njit(cache=True)
def _pair_careful(a1, b1, a2, b2, acc):
    for f in range(P_FIELDS):
        acc[f] = 0.0
    for j in range(a1.shape[0]):
        if not (np.isfinite(a1[j]) and np.isfinite(b1[j]) and np.isfinite(a2[j]) and np.isfinite(b2[j])):
            continue
        d1 = np.float64(b1[j] - a1[j])
        d2 = np.float64(b2[j] - a2[j])
        acc[P_DOT] += d1 * d2
        acc[P_D1] += d1 * d1
        acc[P_D2] += d2 * d2


@njit(parallel=True, cache=True)
def _fused(R, shift, XB, ta, tb, ca, cb, pa1, pb1, pa2, pb2, tol, nparts):
    """Partial sums over ``nparts`` fixed runs of tiles, added in order: the split of the work, hence every
    rounding, depends on the chunk's length only, never on how many threads run the parts."""
    nck, m = len(R), R[0].shape[0]
    T = ta.shape[0]
    P = pa1.shape[0]
    ntiles = (m + _TILE - 1) // _TILE
    per = (ntiles + nparts - 1) // nparts
    part_t = np.zeros((nparts, T, T_FIELDS))
    part_p = np.zeros((nparts, P, P_FIELDS))
    for w in prange(nparts):
        bits = np.empty((nck, _TILE), dtype=np.uint32)
        F = bits.view(np.float32)
        cs = np.empty((nck, 2))
        acc = np.empty(T_FIELDS)
        pacc = np.empty(P_FIELDS)
        for tile in range(w * per, min(ntiles, (w + 1) * per)):
            lo = tile * _TILE
            hi = min(m, lo + _TILE)
            n = hi - lo
            _decode(R, shift, lo, hi, bits)
            for c in range(nck):
                _ckpt_sums(F[c, :n], cs[c])
            for t in range(T):
                a = ta[t]
                b = tb[t]
                _trans_fast(F[a, :n], F[b, :n], XB[ca[t]][lo:hi], XB[cb[t]][lo:hi], tol, acc)
                acc[SUM_A2] = cs[a, 0]
                acc[SUM_B2] = cs[b, 0]
                acc[SUM_ABSA] = cs[a, 1]
                if not np.isfinite(acc[SUM_A2] + acc[SUM_B2] + acc[DOT_AB] + acc[SUM_D2] + acc[SUM_ABSA]):
                    _trans_careful(F[a, :n], F[b, :n], XB[ca[t]][lo:hi], XB[cb[t]][lo:hi], tol, acc)
                for f in range(T_FIELDS):
                    part_t[w, t, f] += acc[f]
            for p in range(P):
                _pair_fast(F[pa1[p], :n], F[pb1[p], :n], F[pa2[p], :n], F[pb2[p], :n], pacc)
                if not np.isfinite(pacc[P_DOT] + pacc[P_D1] + pacc[P_D2]):
                    _pair_careful(F[pa1[p], :n], F[pb1[p], :n], F[pa2[p], :n], F[pb2[p], :n], pacc)
                for f in range(P_FIELDS):
                    part_p[w, p, f] += pacc[f]
    return part_t.sum(axis=0), part_p.sum(axis=0)


@njit(parallel=True, cache=True)
def _widen_bf16(raw, out_bits):
    for i in prange(raw.shape[0]):
        out_bits[i] = np.uint32(raw[i]) << 16


def bf16_to_float32(x: "torch.Tensor") -> "torch.Tensor":
    """bfloat16 → float32 as a parallel bit shift; torch's CPU cast is several times slower."""
    import torch

    flat = x.contiguous().reshape(-1)
    out = torch.empty(flat.shape, dtype=torch.float32)
    _widen_bf16(flat.view(torch.int16).numpy().view(np.uint16), out.numpy().view(np.uint32))
    return out.reshape(x.shape)


_BF16_TABLE = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)


@njit(parallel=True, cache=True)
def _widen_with_deltas(raw, table, a, b, out):
    m, n = len(raw), raw[0].shape[0]
    width = 16384  # contiguous runs per row: strided element-wise writes to 9 rows would thrash the cache
    for blk in prange((n + width - 1) // width):
        s, e = blk * width, min(n, (blk + 1) * width)
        for c in range(m):
            row = raw[c]
            for i in range(s, e):
                out[c, i] = table[row[i]]
        for d in range(a.shape[0]):
            for i in range(s, e):
                out[m + d, i] = out[b[d], i] - out[a[d], i]


def widen_with_deltas(raw, deltas: list[tuple[int, int]], out: np.ndarray) -> None:
    """Rows of ``out``: each bfloat16 row of ``raw`` (uint16 bits) as float32, then row b − row a per delta.

    One parallel pass into a caller-owned buffer: the spectral passes re-read every matrix
    several times, and a cast plus one subtraction per delta would allocate and sweep memory
    once per product.
    """
    a = np.array([d[0] for d in deltas], dtype=np.int64)
    b = np.array([d[1] for d in deltas], dtype=np.int64)
    _widen_with_deltas(_rows(raw, np.uint16), _BF16_TABLE, a, b, out)


def _rows(x, dtype) -> tuple[np.ndarray, ...]:
    """Rows as a tuple of contiguous 1-D arrays of one dtype: each checkpoint's chunk may live in its own mapping."""
    return tuple(np.ascontiguousarray(r).view(dtype) for r in x)


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def stats_numba(R, XB, trans, cmp, pairs, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Fused CPU pass over raw bit patterns ``R`` (one row per checkpoint: a 2-D array or a sequence of 1-D ones).

    uint16 rows hold bfloat16, 32-bit rows float32. ``trans``: (a, b) rows of R; ``cmp``: (qa, qb)
    rows of ``XB``, the bit patterns compared for ``changed_exact``; ``pairs``: (t1, t2) indices of trans.
    """
    dtype = np.dtype(R[0].dtype)
    if dtype in (np.uint16, np.int16):
        R, shift = _rows(R, np.uint16), 16
    elif dtype in (np.uint32, np.int32, np.float32):
        R, shift = _rows(R, np.uint32), 0
    else:
        raise TypeError(f"raw rows must be bfloat16 (uint16) or float32 bits, got {dtype}")
    XB = _rows(XB, np.dtype(XB[0].dtype))
    trans = np.asarray(trans, dtype=np.int64).reshape(-1, 2)
    cmp = np.asarray(cmp, dtype=np.int64).reshape(-1, 2)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    p1, p2 = trans[pairs[:, 0]] if len(pairs) else trans[:0], trans[pairs[:, 1]] if len(pairs) else trans[:0]
    return _fused(R, shift, XB, trans[:, 0].copy(), trans[:, 1].copy(), cmp[:, 0].copy(), cmp[:, 1].copy(),
                  _i64(p1[:, 0]), _i64(p1[:, 1]), _i64(p2[:, 0]), _i64(p2[:, 1]), float(tol), n_parts(R[0].shape[0]))


_PARTS = 64


def n_parts(m: int) -> int:
    """Partial-sum runs for a chunk of ``m`` entries: up to 64 (enough to balance any core count we meet),
    fixed by the length alone so that a Ray worker with one thread and the driver with 16 add the same
    numbers in the same order — tensors.csv is bit-identical whatever the threads."""
    return max(1, min(_PARTS, -(-m // _TILE)))


def stats_torch(X: "torch.Tensor", XB: "torch.Tensor", trans, cmp, pairs, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """The same sums with vectorised torch ops in float64: the GPU path and the tests' reference."""
    import torch

    trans = torch.as_tensor(np.asarray(trans, dtype=np.int64).reshape(-1, 2), device=X.device)
    cmp = torch.as_tensor(np.asarray(cmp, dtype=np.int64).reshape(-1, 2), device=X.device)
    A = X[trans[:, 0]].double()
    B = X[trans[:, 1]].double()
    fin = torch.isfinite(A) & torch.isfinite(B)
    A = torch.where(fin, A, 0.0)
    B = torch.where(fin, B, 0.0)
    D = (X[trans[:, 1]] - X[trans[:, 0]]).double()
    D = torch.where(fin, D, 0.0)
    ch = (XB[cmp[:, 0]] != XB[cmp[:, 1]]) & fin
    out = torch.zeros((len(trans), T_FIELDS), dtype=torch.float64, device=X.device)
    out[:, SUM_A2] = (A * A).sum(1)
    out[:, SUM_B2] = (B * B).sum(1)
    out[:, DOT_AB] = (A * B).sum(1)
    out[:, SUM_D2] = (D * D).sum(1)
    out[:, N_EXACT] = ch.sum(1).double()
    out[:, N_TOL] = ((D.abs() > tol) & fin).sum(1).double()
    out[:, SUM_ABSA_CHANGED] = (A.abs() * ch).sum(1)
    out[:, SUM_ABSA] = A.abs().sum(1)
    out[:, N] = fin.sum(1).double()
    out[:, NONFINITE] = (~fin).sum(1).double()
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    pout = torch.zeros((len(pairs), P_FIELDS), dtype=torch.float64, device=X.device)
    for i, (t1, t2) in enumerate(pairs):
        f = fin[t1] & fin[t2]
        d1 = torch.where(f, D[t1], 0.0)
        d2 = torch.where(f, D[t2], 0.0)
        pout[i, P_DOT] = (d1 * d2).sum()
        pout[i, P_D1] = (d1 * d1).sum()
        pout[i, P_D2] = (d2 * d2).sum()
    return out.cpu().numpy(), pout.cpu().numpy()
