"""Accuracy and cost of the spectral pass: topk (block Krylov) against exact spectra, and full vs topk.

For each matrix size and spectrum it prints the relative error of σ₁, stable rank and top-16
energy for: the current topk (block Krylov, q = 4, extrapolated), its raw Ritz values, and
the previous algorithm (randomized subspace iteration, 3 power iterations: Halko et al. 2011
Alg. 4.4) — plus whether the per-value error estimate covered the true error, and the
seconds per matrix of topk, the previous topk and full (exact SVD with singular vectors, as
``--spectral full`` does for W_A and W_B). It ends with torch's float32 matmul rate on this
machine and the rate the topk pass achieves on its own products (issue #14).

    python benchmarks/bench_spectral.py                      # the table in docs/validation/weights.md
    python benchmarks/bench_spectral.py --sizes 512x1024 --no-full --threads 1
    python benchmarks/bench_spectral.py --sizes 4096x14336 --oversample 48 --power-iters 2 --no-full --no-old
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ptlens.weights import spectral as SP


def chunks(A: torch.Tensor, step: int = 1024):
    return lambda: (A[i:i + step] for i in range(0, A.shape[0], step))


def matrix(kind: str, m: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(m, n, generator=g)
    if kind == "gaussian":
        return G
    if kind == "lowrank+noise":  # rank 16 carrying half the energy of the noise, σ ratio 3:1 across it
        r = 16
        L = (torch.randn(m, r, generator=g) * torch.linspace(3, 1, r)) @ torch.randn(r, n, generator=g)
        return L / L.norm() * G.norm() * 0.7 + G
    if kind == "powerlaw":  # σ_i ∝ i^-0.5 over the whole spectrum: slow decay, like trained weights
        b = min(m, n)
        Qa = torch.linalg.qr(torch.randn(m, b, generator=g)).Q
        Qb = torch.linalg.qr(torch.randn(n, b, generator=g)).Q
        return (Qa * torch.arange(1, b + 1, dtype=torch.float32) ** -0.5) @ Qb.T
    raise ValueError(kind)


def reference(A: torch.Tensor, k: int = 16) -> tuple[np.ndarray, float]:
    """Top-k singular values in float64 from the smaller Gram matrix, and ‖A‖_F²."""
    D = A.double()
    G = D @ D.T if A.shape[0] <= A.shape[1] else D.T @ D
    ev = torch.linalg.eigvalsh(G).flip(0)[:k].clamp_min(0).sqrt()
    return ev.numpy(), float((D * D).sum())


def power_iteration_svd(rows, shape, k: int, oversample: int = 10, power_iters: int = 3, seed: int = 0):
    """The previous topk: randomized subspace iteration (Halko et al. 2011, Alg. 4.4), values only."""
    m, n = shape
    ell = k + oversample
    omega = torch.randn((n, ell), generator=torch.Generator().manual_seed(seed))

    def rng(right):
        return torch.linalg.qr(torch.cat([c @ right for c in rows()]), mode="reduced").Q

    def left(Q):
        acc, r0 = torch.zeros((ell, n)), 0
        for c in rows():
            acc += Q[r0:r0 + c.shape[0]].T @ c
            r0 += c.shape[0]
        return acc

    Q = rng(omega)
    for _ in range(power_iters):
        Q = rng(torch.linalg.qr(left(Q).T, mode="reduced").Q)
    return torch.linalg.svdvals(left(Q))[:k]


def errors(S: np.ndarray, ref: np.ndarray, frob2: float) -> dict[str, float]:
    return {"sigma1": S[0] / ref[0] - 1,
            "stable_rank": (ref[0] / S[0]) ** 2 - 1,
            "top16_energy": (S[:16] ** 2).sum() / (ref[:16] ** 2).sum() - 1}


def krylov_flops(m: int, n: int, k: int = 16, oversample: int = 10, q: int = 4) -> float:
    ell = k + oversample
    return 2.0 * m * n * ell * (2 * q + 2)  # 2q + 2 passes, each a product with ℓ columns


def matmul_rate(m: int = 4096, n: int = 4096, cols: int = 26, reps: int = 5) -> dict[str, float]:
    A, X, Y = torch.randn(m, n), torch.randn(n, cols), torch.randn(2048, 2048)
    A @ X
    t = time.perf_counter()
    for _ in range(reps):
        A @ X
    thin = 2.0 * m * n * cols * reps / (time.perf_counter() - t) / 1e9
    Y @ Y
    t = time.perf_counter()
    for _ in range(2):
        Y @ Y
    square = 2.0 * 2048 ** 3 * 2 / (time.perf_counter() - t) / 1e9
    return {"square_2048_gflops": square, f"thin_{m}x{n}_times_{cols}_gflops": thin}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1024x4096,4096x4096,4096x14336")
    ap.add_argument("--kinds", default="gaussian,lowrank+noise,powerlaw")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-full", action="store_true", help="skip timing the exact SVD")
    ap.add_argument("--oversample", type=int, default=10, help="ℓ = 16 + this: the sketch's columns")
    ap.add_argument("--power-iters", type=int, default=4, help="q: the pass reads each matrix 2q + 2 times")
    ap.add_argument("--no-old", action="store_true", help="skip the previous algorithm")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows, out = [], {"threads": args.threads, "results": []}
    print("| size | spectrum | method | σ₁ err | stable rank err | top-16 energy err | est. covers | s / matrix |")
    print("|---|---|---|---:|---:|---:|---|---:|")
    for size in args.sizes.split(","):
        m, n = map(int, size.split("x"))
        for kind in args.kinds.split(","):
            A = matrix(kind, m, n)
            ref, frob2 = reference(A)
            t = time.perf_counter()
            low = SP.randomized_svd(chunks(A), (m, n), 16, materialize_below=0, oversample=args.oversample,
                                    power_iters=args.power_iters)
            t_topk = time.perf_counter() - t
            S = low.S.double().numpy()
            raw = low.history[-1].double().numpy()
            covered = bool(np.all(np.abs(S - ref) <= low.err.double().numpy()))
            cover_ratio = float(np.max(np.abs(S - ref) / np.maximum(low.err.double().numpy(), 1e-30)))
            t = time.perf_counter()
            old = ref if args.no_old else power_iteration_svd(chunks(A), (m, n), 16).double().numpy()
            t_old = time.perf_counter() - t
            res = {"size": size, "kind": kind, "topk": errors(S, ref, frob2), "raw_ritz": errors(raw, ref, frob2),
                   "old_power": errors(old, ref, frob2), "covered": covered, "max_true_over_est": cover_ratio,
                   "seconds_topk": t_topk, "seconds_old": t_old,
                   "topk_gflops": krylov_flops(m, n, oversample=args.oversample, q=args.power_iters) / t_topk / 1e9}
            label = f"topk (block Krylov ℓ={16 + args.oversample}, q={args.power_iters}, extrapolated)"
            for name, e, sec, cov in ((label, res["topk"], t_topk,
                                       f"{'yes' if covered else 'no'} ({cover_ratio:.2f})"),
                                      ("raw Ritz values of the same pass", res["raw_ritz"], t_topk, "–"),
                                      *(() if args.no_old else
                                        (("previous topk (3 power iterations)", res["old_power"], t_old, "–"),))):
                print(f"| {size} | {kind} | {name} | {100 * e['sigma1']:+.2f}% | {100 * e['stable_rank']:+.2f}% "
                      f"| {100 * e['top16_energy']:+.2f}% | {cov} | {sec:.2f} |", flush=True)
            out["results"].append(res)
            rows.append(res)
        if not args.no_full:
            A = matrix("gaussian", m, n)
            t = time.perf_counter()
            SP.exact_svd(A, 16)
            t_full = time.perf_counter() - t
            out["results"].append({"size": size, "seconds_full": t_full})
            print(f"| {size} | gaussian | full (exact SVD with vectors, "
                  f"{'float64' if m * n <= SP.EXACT_FLOAT64_MAX else 'float32'}) | 0 | 0 | 0 | exact | {t_full:.2f} |",
                  flush=True)
    rate = matmul_rate(cols=16 + args.oversample)
    out["matmul"] = rate
    print()
    print(f"torch float32 matmul on {args.threads} thread(s): " + ", ".join(f"{k} {v:.1f}" for k, v in rate.items()))
    for r in rows:
        print(f"topk pass on {r['size']} {r['kind']}: {r['topk_gflops']:.1f} GFLOP/s on its products")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
