"""The fused element-wise kernel alone: nanoseconds per position for a bf16 pair (one transition).

    python benchmarks/bench_kernel.py [--threads 1] [--positions 33554432]

Two bf16 rows (Gaussian weights, a third of the entries nudged by one unit in the last place),
``ptlens.weights.kernels.stats_numba`` as the scan calls it, best of five after a warm-up call.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from ptlens.weights import kernels as K


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--positions", type=int, default=1 << 25)
    a = ap.parse_args()
    numba.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    m = a.positions
    x = ((rng.standard_normal(m, dtype=np.float32) * 0.02).view(np.uint32) >> 16).astype(np.uint16)
    y = x.copy()
    y[rng.integers(0, m, m // 3)] += 1
    rows = [x, y]
    K.stats_numba(rows, rows, [(0, 1)], [(0, 1)], [], 1e-5)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        K.stats_numba(rows, rows, [(0, 1)], [(0, 1)], [], 1e-5)
        best = min(best, time.perf_counter() - t)
    print(f"{a.threads} thread(s): {best / m * 1e9:.2f} ns per position, {4 * m / best / 1e9:.2f} GB/s of bf16 pair")


if __name__ == "__main__":
    main()
