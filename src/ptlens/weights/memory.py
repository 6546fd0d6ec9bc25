"""Memory of the weight scan: glibc's allocator held to give freed chunks back while scanning, and the
bytes ``--spectral full`` needs, checked against those available before any work.

Split from the scan (:mod:`ptlens.weights.tensor_scan`) so that planning, which calls
:func:`check_full_memory`, and the executors, which wrap the scan in :func:`_return_freed_memory`,
need neither torch nor the scan's kernels.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ptlens.errors import PtlensError

if TYPE_CHECKING:
    from ptlens.weights.plan import TensorTask


@contextmanager
def _return_freed_memory():
    """Serve every allocation of 1 MiB or more by its own mapping, given back when freed — during the scan only.

    glibc raises its mmap threshold as large blocks are freed, after which tens-of-MB chunk
    buffers come from the heap and stay there fragmented: measured on Llama-3.1-8B shapes,
    peak RSS of the spectral pass fell from 1.8 GB to 1.1 GB with this setting. Left in force, it
    makes every later MB-sized tensor a fresh mapping: in ``ptlens run`` the behaviour step then
    spent 4x the system time on page faults (7.3 s vs 2.0 s on 8 problems x 8 samples), so on
    exit the threshold goes to 32 MiB, the largest that glibc's own adaptive threshold reaches, and the
    trim threshold to 64 MiB: setting either turns glibc's adaptation off, and the trim threshold left at
    its 128 KiB start gives every freed MB-sized block at the heap's top back to the kernel, to be
    faulted in again on the next allocation (17M minor faults in one ``ptlens run``).
    """
    libc = _glibc()
    if libc is not None:
        _set_mmap_threshold(libc, 1 << 20)
    try:
        yield
    finally:
        if libc is not None:
            _set_mmap_threshold(libc, 32 << 20)
            libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)  # 2 x the mmap threshold, glibc's own adaptive rule


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_mmap_threshold = 32 << 20  # what this module last set (glibc has no getter); 32 MiB = its adaptive maximum


def _set_mmap_threshold(libc, nbytes: int) -> int:
    """Set glibc's mmap threshold; returns the value it replaces."""
    global _mmap_threshold
    before, _mmap_threshold = _mmap_threshold, nbytes
    libc.mallopt(_M_MMAP_THRESHOLD, nbytes)
    return before


@functools.lru_cache(maxsize=None)
def _glibc():
    """glibc's ``mallopt``/``malloc_trim``, or None (another C library, or none found)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextmanager
def _heap_temporaries():
    """Serve the temporaries of a resident matrix's principal-overlap passes from the heap, then trim it.

    Under the scan's 1 MiB mmap threshold (``_return_freed_memory``) every whole-matrix temporary of those
    passes (the rank-k reconstruction, |R|, its buckets, the masks) was a fresh mapping, faulted in page by
    page: on a 1B pair's first four layers 7–11 s of system time in 16–20 s. From the heap they reuse freed
    memory (13.7–15.2 s, 3.7–5.8 s of system time, the same numbers); ``malloc_trim`` afterwards gives the
    freed memory back, so the next tensor starts from the same footprint. Only for matrices held resident
    (a few such temporaries, bounded by ``spectral_resident_mb``): on streamed ones, the blocks' temporaries
    interleaved with the small tensors the pass keeps fragmented the heap (an 8B pair's embedding and one
    MLP: 2.29 GB peak against 0.93 GB).
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    before = _set_mmap_threshold(libc, 256 << 20)
    try:
        yield
    finally:
        _set_mmap_threshold(libc, before)
        libc.malloc_trim(0)


def full_memory_bytes(shape: tuple[int, int], checkpoints: int = 2, resident_mb: int = 256) -> int:
    """Peak bytes ``--spectral full`` holds for one m × n matrix, from its shape alone.

    ``exact_svd`` of W_A, W_B (vectors) and ΔW (values) one at a time: the float32 matrix, its
    working copy (float64 up to ``EXACT_FLOAT64_MAX`` entries), LAPACK's own copy and U (or Vᵀ)
    of the same size, the other factor (min(m, n)²) and gesdd's 4·min(m, n)² workspace:
    4·mn + 3·s·mn + 5·s·min(m, n)² bytes, s the working itemsize (16·mn + 20·min² in float32:
    about four float32 copies). Matrices held resident (``spectral_resident_mb``) add their copies.
    Measured against it: docs/SCALING.md.
    """
    m, n = shape
    s = 8 if m * n <= EXACT_FLOAT64_MAX else 4
    resident = checkpoints * 4 * m * n if (checkpoints + 1) * 4 * m * n <= resident_mb * (1 << 20) else 0
    return resident + 4 * m * n + 3 * s * m * n + 5 * s * min(m, n) ** 2


EXACT_FLOAT64_MAX = 1 << 24  # = spectral.EXACT_FLOAT64_MAX (not imported: planning does not import torch)


def available_memory() -> tuple[int, str]:
    """(bytes a scan may use, where that figure comes from): ``PTLENS_MEMORY_BUDGET`` when set, else the
    kernel's MemAvailable, capped by a cgroup v2 limit when this process runs under one."""
    from ptlens.hostmem import BUDGET_ENV, host_available, memory_budget

    budget = memory_budget()
    return (budget, BUDGET_ENV) if budget is not None else host_available()


def check_full_memory(tasks: list["TensorTask"]) -> None:
    """Refuse ``--spectral full`` before any work when a matrix's exact SVDs would not fit in memory:
    one line naming the largest such tensor, the bytes it needs and the bytes available."""
    avail, source = available_memory()
    over = []
    for t in tasks:
        present = [i for i in t.infos if i is not None]
        shp = present[0].shape if present else ()
        if len(shp) != 2 or min(min(i.shape[0] for i in present), shp[1]) < 2:
            continue
        shape = (max(i.shape[0] for i in present), shp[1])
        need = full_memory_bytes(shape, len(present), t.config.spectral_resident_mb)
        if need > avail:
            over.append((need, t.name, shape))
    if over:
        need, name, (m, n) = max(over)
        more = f"; {len(over) - 1} more tensor(s) do not fit either" if len(over) > 1 else ""
        raise PtlensError(f"--spectral full: {name} ({m} × {n}) needs {need:,} bytes ({need / 2**30:.1f} GiB) for its "
                          f"exact SVDs, {avail:,} bytes ({avail / 2**30:.1f} GiB) {source}{more}; use --spectral topk "
                          f"(streamed), or leave it out with --layer-pattern")
