"""The weight scan: one streaming pass over every tensor of every checkpoint of a lineage.

The scan is cut into data-only tasks, one per tensor name (``plan_scan``); ``scan_tensor(task)``
is a pure function of its task, and ``merge_results`` puts the results back in plan order, so an
executor (``executors.py``: in-process, Ray) may run the tasks anywhere, in any order, and retry
them, without changing a byte of the output.

For each tensor name, the same row chunk is read from all N checkpoints at once, and one fused
kernel call computes the element-wise sums of every consecutive and cumulative
transition from it: each byte of each checkpoint is read once, whatever the number of
transitions. Memory is bounded by the chunk budget, not by the model's size. Spectral
metrics then stream the same tensor's rows (from the page cache) through a randomized SVD.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import sys
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Literal

import numpy as np

from ptlens.errors import ArchitectureMismatch, PtlensError
from ptlens.resolve import Lineage
from ptlens.weights import kernels as K
from ptlens.weights import metrics as M
from ptlens.weights import null as N
from ptlens.weights.index import BITS, DTYPES, ITEMSIZE, CheckpointIndex, Reader, TensorInfo, align_tied_heads, decode
from ptlens.weights.names import TensorRole, parse_name

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int, str], None]


@dataclass
class ScanConfig:
    """Everything that changes a scan's numbers; stored with every result.

    Memory per tensor (docs/SCALING.md, measured in docs/BENCHMARKS.md): ``off`` holds one
    ``chunk_mb`` chunk per checkpoint. ``topk`` keeps an m × n matrix resident as float32 only
    when its checkpoints fit ``spectral_resident_mb``; larger ones stream, holding one chunk per W
    and ΔW (c = checkpoints + changed ΔWs matrices) and, per matrix, its Krylov basis and QᵀA:
    4·c·(m + n)·ℓ(q + 1) bytes, ℓ = k + oversample, q = power_iters (c = 3, defaults: 0.23 GB
    for 128256 × 16384) — linear in m + n, never m·n. ``full`` needs about four float32 copies of
    a matrix (``full_memory_bytes``) and refuses before any work what does not fit.
    """

    spectral: Literal["off", "topk", "full"] = "topk"
    k: int = 16
    oversample: int = 10
    power_iters: int = 4
    tolerance: float = 1e-5
    alpha: float = 0.05
    layer_pattern: str | None = None
    device: str = "auto"
    workers: int | None = None
    chunk_mb: int = 32
    spectral_resident_mb: int = 256
    backend: Literal["auto", "numba", "torch"] = "auto"
    allow_pickle: bool = False

    def validate(self) -> None:
        if self.spectral not in ("off", "topk", "full"):
            raise PtlensError(f"--spectral must be off, topk or full, not {self.spectral!r}")
        if self.k < 1:
            raise PtlensError("--k must be at least 1")
        if not 0 < self.alpha < 1:
            raise PtlensError("--alpha must lie in (0, 1)")
        if self.tolerance < 0:
            raise PtlensError("--tolerance must be non-negative")
        if self.layer_pattern:
            try:
                re.compile(self.layer_pattern)
            except re.error as e:
                raise PtlensError(f"--layer-pattern '{self.layer_pattern}' is not a valid regular expression ({e})") from None
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise PtlensError(f"--device must be cpu, cuda or auto, not {self.device!r}")
        if self.device.startswith("cuda") and not _torch().cuda.is_available():
            raise PtlensError("--device cuda: no CUDA device is available to torch here")

    def fingerprint(self, device: str, backend: str) -> dict:
        """The settings that change a scan's numbers, with the device and backend ``auto`` resolved to: what stored
        results and the scan journal are keyed by (threads, ``allow_pickle`` and how the tasks are executed
        change no number)."""
        from ptlens.results.reuse import settings_of

        return {**settings_of(self, drop=("workers", "allow_pickle", "device", "backend")),
                "device_used": device, "backend_used": backend}


@dataclass(frozen=True)
class Transition:
    name: str
    a: int
    b: int
    kind: Literal["consecutive", "cumulative", "stage"]

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name.replace("→", "_to_"))


def transitions_for(names: list[str], labels: list[str] | None = None) -> list[Transition]:
    """Consecutive neighbours, then cumulative first → each later checkpoint, then (with ``labels``) the span of
    every stage of several checkpoints, from the checkpoint before it to its last (no duplicates)."""
    out = [Transition(f"{names[i]}→{names[i + 1]}", i, i + 1, "consecutive") for i in range(len(names) - 1)]
    out += [Transition(f"{names[0]}→{names[j]}", 0, j, "cumulative") for j in range(2, len(names))]
    have = {(t.a, t.b) for t in out}
    for a, b in stage_spans(labels or []):
        if (a, b) not in have:
            out.append(Transition(f"{names[a]}→{names[b]}", a, b, "stage"))
    return out


def stage_spans(labels: list[str]) -> list[tuple[int, int]]:
    """(start, end) of each trained stage: neighbours sharing a label form a stage (report/stages.py)."""
    out, i = [], 0
    while i < len(labels):
        j = i
        while j + 1 < len(labels) and labels[j + 1] == labels[i]:
            j += 1
        if i > 0:
            out.append((i - 1, j))
        i = j + 1
    return out


def delta_pairs_for(transitions: list[Transition], labels: list[str] | None = None) -> list[tuple[int, int]]:
    """Which Δ cosines to compute: neighbouring consecutive transitions, and first vs last; with ``labels`` also
    neighbouring stage spans and the first vs the last stage span (what the report's transfer question compares)."""
    cons = [i for i, t in enumerate(transitions) if t.kind == "consecutive"]
    pairs = [(cons[i], cons[i + 1]) for i in range(len(cons) - 1)]
    if len(cons) >= 3:
        pairs.append((cons[0], cons[-1]))
    index = {(t.a, t.b): i for i, t in enumerate(transitions)}
    spans = [index[ab] for ab in stage_spans(labels or []) if ab in index]
    for p in [(spans[i], spans[i + 1]) for i in range(len(spans) - 1)] + ([(spans[0], spans[-1])] if len(spans) >= 3 else []):
        if p not in pairs:
            pairs.append(p)
    return pairs


@dataclass
class TensorRecord:
    """One tensor × one transition: every DESIGN.md metric, plus the sums that aggregate."""

    tensor: str
    transition: str
    kind: str
    group: str
    layer: int | None
    shape: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    rows_a: int
    rows_b: int
    sums: np.ndarray
    metrics: dict[str, float | None] = field(default_factory=dict)
    spectral: dict[str, float | None] = field(default_factory=dict)
    added_rows: int = 0
    added_rows_norm: float = 0.0
    null_sums: np.ndarray | None = None  # ``null.NS_*`` sample sums scaled to this tensor's entries
    null_entries: int = 0  # entries the element-wise null was simulated on


@dataclass
class PairRecord:
    tensor: str
    kind: str
    group: str
    layer: int | None
    t1: str
    t2: str
    sums: np.ndarray
    cosine: float | None = None


@dataclass
class ScanResult:
    lineage: Lineage
    config: ScanConfig
    transitions: list[Transition]
    records: list[TensorRecord]
    pairs: list[PairRecord]
    missing: dict[str, list[str]]
    tied: dict[str, bool]
    skipped: dict[str, str]
    bytes_read: int
    seconds: float
    device: str
    backend: str
    fingerprint: dict | None = None
    """What the results were made from (:mod:`ptlens.results.reuse`); stored in summary.json as ``inputs``."""
    reused: int = 0
    """Tensors taken from the scan journal of an interrupted run instead of scanned."""


@dataclass
class _TensorPlan:
    name: str
    role: TensorRole
    rows: list[int | None]
    row_shape: tuple[int, ...]
    dtypes: list[str | None]

    @property
    def row_elems(self) -> int:
        return math.prod(self.row_shape)

    def nbytes(self, c: int) -> int:
        r = self.rows[c]
        return 0 if r is None else r * self.row_elems * ITEMSIZE[self.dtypes[c]]


def plan_tensors(indexes: list[CheckpointIndex], names: list[str], layer_pattern: str | None
                 ) -> tuple[list[_TensorPlan], dict[str, list[str]], dict[str, str]]:
    """Pair tensors by name; vocabulary rows may differ, any other shape difference is fatal. A tied checkpoint's
    head is its embedding when others store a head (:func:`align_tied_heads`, which adds the alias to ``indexes``)."""
    align_tied_heads(indexes)
    pattern = re.compile(layer_pattern) if layer_pattern else None
    all_names = sorted(set().union(*(ix.tensors for ix in indexes)), key=_natural_key)
    plans, missing, skipped, mismatches = [], {}, {}, []
    for name in all_names:
        if pattern and not pattern.search(name):
            continue
        infos = [ix.tensors.get(name) for ix in indexes]
        absent = [names[i] for i, t in enumerate(infos) if t is None]
        if absent:
            missing[name] = absent
        present = [t for t in infos if t is not None]
        if not all(t.is_float for t in present):
            skipped[name] = f"non-float dtype {present[0].dtype}"
            continue
        role = parse_name(name)
        shapes = {t.shape if role.is_vocab else t.shape for t in present}
        tails = {t.shape[1:] for t in present}
        if len(tails) > 1 or (not role.is_vocab and len(shapes) > 1):
            mismatches.append(name + ": " + ", ".join(
                f"{names[i]} {tuple(t.shape)}" for i, t in enumerate(infos) if t is not None))
            continue
        if len(present) < 2:
            continue
        shape0 = present[0].shape
        rows = [None if t is None else (t.shape[0] if t.shape else 1) for t in infos]
        plans.append(_TensorPlan(name, role, rows, tuple(shape0[1:]), [None if t is None else t.dtype for t in infos]))
    if mismatches:
        shown = "; ".join(mismatches[:8]) + (f"; … {len(mismatches) - 8} more" if len(mismatches) > 8 else "")
        raise ArchitectureMismatch(f"architecture mismatch: {len(mismatches)} tensor(s) differ in shape: {shown}")
    if pattern and not plans:
        raise PtlensError(f"--layer-pattern '{layer_pattern}' matches no tensor present in two or more checkpoints")
    return plans, missing, skipped


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


_coarser, _bits, _changed_mask = N.coarser, N.bits, N.changed_mask


def _torch():
    """torch, imported on first need: the spectral pass, a GPU, float16/float8 checkpoints. An element-wise
    (``--spectral off``) scan of bfloat16 or float32 checkpoints on CPU never imports it (1.1 s of start-up)."""
    import torch

    return torch


@contextmanager
def _torch_threads(n: int):
    """Small linear algebra runs faster on one thread than on several contending ones."""
    if "torch" not in sys.modules:  # nothing of torch's runs in this block
        yield
        return
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_SMALL_MATRIX = 1 << 20


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
    """(bytes a scan may use, where that figure comes from): ``PTLENS_MEMORY_MB`` when set, else the
    kernel's MemAvailable, capped by a cgroup v2 limit when this process runs under one."""
    env = os.environ.get("PTLENS_MEMORY_MB")
    if env:
        try:
            return int(float(env) * (1 << 20)), "PTLENS_MEMORY_MB"
        except ValueError:
            raise PtlensError(f"PTLENS_MEMORY_MB must be a number of MiB, not {env!r}") from None
    from ptlens.hostmem import host_available

    return host_available()


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


@dataclass(frozen=True)
class TensorTask:
    """One tensor's share of a scan, as plain data: what to read (file, byte offset, dtype, shape per
    checkpoint) and what to compute. Picklable and free of open files, so any process that sees the
    same paths (a Ray worker on a shared filesystem) can run it; ``index`` is its place in the scan."""

    index: int
    name: str
    infos: tuple[TensorInfo | None, ...]  # one per checkpoint of the lineage; None where absent
    transitions: tuple[Transition, ...]
    pairs: tuple[tuple[int, int], ...]
    config: ScanConfig
    device: str  # resolved: "cpu", "cuda", "cuda:1"
    backend: str  # resolved: "numba" or "torch"

    @property
    def nbytes(self) -> int:
        """Bytes of this tensor over all checkpoints: what the task reads (at least once)."""
        return sum(i.nbytes for i in self.infos if i is not None)


@dataclass
class TensorResult:
    """What one task returns: its rows of tensors.csv and delta-cosine sums, and the bytes it read."""

    index: int
    name: str
    records: list[TensorRecord]
    pairs: list[PairRecord]
    bytes_read: int
    seconds: float


def resolve_device(config: ScanConfig) -> tuple[str, str]:
    """(device, backend) that ``auto`` means on this machine. Asks torch only where a GPU driver is present."""
    dev = config.device
    if dev == "auto":
        dev = "cuda" if gpu_driver_present() and _torch().cuda.is_available() else "cpu"
    backend = config.backend
    if backend == "auto":
        backend = "numba" if dev == "cpu" else "torch"
    return dev, backend


def gpu_driver_present() -> bool:
    """Whether an NVIDIA, AMD or WSL2 GPU driver exposes a device here (torch's cuda covers all three); without
    one, ``--device auto`` is the CPU and torch need not be imported to find that out."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd",
                                           "/dev/dxg"))


@dataclass
class ScanPlan:
    """A lineage's scan cut into tasks, plus what the merge needs that no task computes."""

    tasks: list[TensorTask]
    transitions: list[Transition]
    missing: dict[str, list[str]]
    skipped: dict[str, str]
    tied: dict[str, bool]
    config: ScanConfig
    device: str
    backend: str

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tasks)


def plan_scan(lineage: Lineage, config: ScanConfig) -> ScanPlan:
    """Read the checkpoints' headers (no weights) and make one task per tensor present in two or more."""
    config.validate()
    if any(c.path is None for c in lineage.checkpoints):
        raise PtlensError("lineage has unresolved checkpoints (no local folder)")
    names = lineage.names
    indexes = [CheckpointIndex.from_dir(c.path, allow_pickle=config.allow_pickle) for c in lineage.checkpoints]
    labels = [c.label for c in lineage.checkpoints]
    transitions = transitions_for(names, labels)
    pairs = tuple(delta_pairs_for(transitions, labels))
    device, backend = resolve_device(config)
    plans, missing, skipped = plan_tensors(indexes, names, config.layer_pattern)
    tasks = [TensorTask(i, p.name, tuple(ix.tensors.get(p.name) for ix in indexes), tuple(transitions), pairs,
                        config, device, backend) for i, p in enumerate(plans)]
    if config.spectral == "full":
        check_full_memory(tasks)
    tied = {n: ix.tied_embeddings for n, ix in zip(names, indexes)}
    return ScanPlan(tasks, transitions, missing, skipped, tied, config, device, backend)


def scan_tensor(task: TensorTask, progress: Callable[[int, str], None] | None = None) -> TensorResult:
    """Every metric of one tensor over every transition: opens the files it needs, reads, closes them.

    A function of ``task`` alone (no state shared between tasks), so tasks may run in any order, in
    any process, and any number of times (a retried task gives the same result). ``progress(nbytes,
    name)`` is called after each chunk with the bytes it read.
    """
    t0 = time.perf_counter()
    with _TensorScan(task, progress) as s:
        records, pairs = s.run()
        return TensorResult(task.index, task.name, records, pairs, s.bytes_done, time.perf_counter() - t0)


def merge_results(plan: ScanPlan, lineage: Lineage, results: Iterable[TensorResult], seconds: float) -> ScanResult:
    """Put task results back in the plan's tensor order: any split of the tasks over workers, finishing in any
    order, gives the same records in the same order — hence the same tensors.csv and, since the aggregates
    sum the records' sums in that order, bit-identical aggregates. A task missing or given twice is an error."""
    by_index: dict[int, TensorResult] = {}
    for r in results:
        if r.index in by_index:
            raise PtlensError(f"scan merge: tensor {r.name} returned twice")
        by_index[r.index] = r
    if sorted(by_index) != list(range(len(plan.tasks))):
        lost = [t.name for t in plan.tasks if t.index not in by_index]
        raise PtlensError(f"scan merge: no result for {len(lost)} tensor(s): {', '.join(lost[:5])}")
    ordered = [by_index[i] for i in range(len(plan.tasks))]
    records = [rec for r in ordered for rec in r.records]
    pairs = [pr for r in ordered for pr in r.pairs]
    return ScanResult(lineage, plan.config, plan.transitions, records, pairs,
                      plan.missing, plan.tied, plan.skipped, sum(r.bytes_read for r in ordered), seconds,
                      plan.device, plan.backend)


def prefetch(task: TensorTask) -> None:
    """Ask the kernel to start reading a task's bytes from disk, so the next tensor's I/O overlaps this one's compute."""
    if not hasattr(os, "posix_fadvise"):
        return
    for info in task.infos:
        if info is None or info.start < 0:
            continue
        try:
            fd = os.open(info.file, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, info.start, info.nbytes, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


class _TensorScan:
    """The working state of one task (its open files, its chunk size, a byte counter); lives inside ``scan_tensor``."""

    def __init__(self, task: TensorTask, progress: Callable[[int, str], None] | None):
        self.task = task
        self.cfg = task.config
        self.transitions = list(task.transitions)
        self.pairs = list(task.pairs)
        self.backend = task.backend
        self.progress = progress
        self.bytes_done = 0
        self.chunk_elems = max(1, self.cfg.chunk_mb * (1 << 20) // 4)
        self._spool = np.empty(0, dtype=np.float32)
        self.infos = task.infos
        self.readers = [None if i is None else Reader(CheckpointIndex(root=i.file.parent, tensors={task.name: i}))
                        for i in task.infos]

    @functools.cached_property
    def device(self) -> "torch.device":
        return _torch().device(self.task.device)

    def __enter__(self) -> "_TensorScan":
        return self

    def __exit__(self, *exc) -> None:
        for r in self.readers:
            if r is not None:
                r.close()

    def run(self) -> tuple[list[TensorRecord], list[PairRecord]]:
        t = self.task
        present = [i for i in t.infos if i is not None]
        role = parse_name(t.name)
        plan = _TensorPlan(t.name, role, [None if i is None else (i.shape[0] if i.shape else 1) for i in t.infos],
                           tuple(present[0].shape[1:]), [None if i is None else i.dtype for i in t.infos])
        return self._tensor(plan)

    # -- element-wise ---------------------------------------------------------------

    def _tensor(self, p: _TensorPlan) -> tuple[list[TensorRecord], list[PairRecord]]:
        N = len(self.infos)
        present = [c for c in range(N) if p.rows[c] is not None]
        active = [t for t, tr in enumerate(self.transitions) if tr.a in present and tr.b in present]
        sums = {t: np.zeros(K.T_FIELDS) for t in active}
        psums = {q: np.zeros(K.P_FIELDS) for q, (t1, t2) in enumerate(self.pairs) if t1 in active and t2 in active}
        added = {t: [0, 0.0] for t in active}
        bounds = sorted({p.rows[c] for c in present})
        r0 = 0
        for r1 in bounds:
            if r1 == r0:
                continue
            members = [c for c in present if p.rows[c] >= r1]
            local = {c: i for i, c in enumerate(members)}
            seg_t = [t for t in active if self.transitions[t].a in local and self.transitions[t].b in local]
            seg_p = [q for q in psums if self.pairs[q][0] in seg_t and self.pairs[q][1] in seg_t]
            newrows = [t for t in active if self.transitions[t].b in local and self.transitions[t].a not in local]
            step = max(1, self.chunk_elems // max(1, p.row_elems))
            for c0 in range(r0, r1, step):
                c1 = min(r1, c0 + step)
                raws = self._read_chunk(p.name, members, c0, c1)  # stored bytes, uint8
                if seg_t:
                    ts, ps = self._chunk_stats(raws, [p.dtypes[c] for c in members],
                                               [(local[self.transitions[t].a], local[self.transitions[t].b]) for t in seg_t],
                                               [(seg_t.index(self.pairs[q][0]), seg_t.index(self.pairs[q][1])) for q in seg_p])
                    for i, t in enumerate(seg_t):
                        sums[t] += ts[i]
                    for i, q in enumerate(seg_p):
                        psums[q] += ps[i]
                for t in newrows:
                    b = self.transitions[t].b
                    xb = decode(raws[local[b]], p.dtypes[b], np.float64)
                    added[t][0] += c1 - c0
                    added[t][1] += float(np.dot(xb, xb))
                self._advance(sum(r.nbytes for r in raws), p.name)
            r0 = r1
        records = []
        for t in active:
            tr = self.transitions[t]
            rec = TensorRecord(
                tensor=p.name, transition=tr.name, kind=p.role.kind, group=p.role.group, layer=p.role.layer,
                shape=self.infos[tr.b].shape,
                dtype_a=p.dtypes[tr.a], dtype_b=p.dtypes[tr.b], rows_a=p.rows[tr.a], rows_b=p.rows[tr.b],
                sums=sums[t], added_rows=added[t][0], added_rows_norm=math.sqrt(added[t][1]))
            rec.metrics = M.finalize(sums[t])
            records.append(rec)
        with _torch_threads(1):  # ops on ~1e5 entries: thread hand-offs would cost more than the work
            null_sample = self._nulls(p, present, active, records)
        prs = []
        for q, s in psums.items():
            t1, t2 = self.pairs[q]
            prs.append(PairRecord(p.name, p.role.kind, p.role.group, p.role.layer, self.transitions[t1].name,
                                  self.transitions[t2].name, s, M.delta_cosine(s)))
        if self.cfg.spectral != "off" and len(p.row_shape) == 1 and min(min(p.rows[c] for c in present), p.row_shape[0]) >= 2:
            small = self.device.type == "cpu" and max(p.rows[c] for c in present) * p.row_elems < _SMALL_MATRIX
            with _torch_threads(1 if small else _torch().get_num_threads()):
                self._spectral(p, present, active, records, null_sample)
        return records, prs

    def _rows_at(self, c: int, name: str, idx: np.ndarray, row_elems: int) -> np.ndarray:
        """Rows ``idx`` (sorted) of one checkpoint's tensor as float32 values, shape (len(idx), row_elems)."""
        dtype = self.infos[c].dtype
        row_bytes = row_elems * ITEMSIZE[dtype]
        if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
            r0, r1 = int(idx[0]), int(idx[-1]) + 1
            raw = self.readers[c].read_bytes(name, r0, r1, np.empty((r1 - r0) * row_bytes, dtype=np.uint8))
        else:  # map the tensor and copy out the sampled rows: only their pages are touched
            raw = self.readers[c].map_rows(name, 0, int(idx[-1]) + 1).reshape(-1, row_bytes)[idx].reshape(-1)
        return decode(raw, dtype).reshape(len(idx), row_elems)

    def _nulls(self, p: _TensorPlan, present: list[int], active: list[int], records: list[TensorRecord]):
        """Element-wise nulls of every transition, simulated on one seeded row sample (``null``).

        Returns (sampled row indices, {transition: (changed mask, stored difference)}) for the
        spectral nulls. The sample is drawn from the rows every checkpoint holds.
        """
        seed = N.tensor_seed(p.name)
        idx = N.sample_rows(min(p.rows[c] for c in present), p.row_elems, seed)
        wa_rows: dict[int, np.ndarray] = {}
        z = None
        drawn = {}
        for t, rec in zip(active, records):
            tr = self.transitions[t]
            n = float(rec.sums[K.N])
            if rec.sums[K.NONFINITE] or n == 0:
                rec.metrics.update(N.elementwise(np.zeros(N.NS_FIELDS)))
                continue
            if tr.a not in wa_rows:
                wa_rows[tr.a] = self._rows_at(tr.a, p.name, idx, p.row_elems)
            wa = wa_rows[tr.a]
            if z is None:
                z = N.noise(tuple(wa.shape), seed)
            ns, ch, d = N.simulate(wa, p.dtypes[tr.a], p.dtypes[tr.b], math.sqrt(rec.sums[K.SUM_D2] / n), z,
                                   self.cfg.tolerance)
            rec.null_sums = ns * (n / ns[N.NS_N])
            rec.null_entries = int(ns[N.NS_N])
            rec.metrics.update(N.elementwise(ns))
            drawn[t] = (ch, d)
        return idx, drawn

    def _read_chunk(self, name: str, members: list[int], c0: int, c1: int) -> list[np.ndarray]:
        """The same rows of one tensor from each member checkpoint, as bytes mapped from the files."""
        return [self.readers[c].map_rows(name, c0, c1) for c in members]

    def _chunk_stats(self, raws: list[np.ndarray], dtypes: list[str], trans, pairs):
        """Sums of every transition over one chunk; ``raws``: the chunk's stored bytes (uint8) per checkpoint."""
        tol = self.cfg.tolerance
        if self.backend == "numba" and len(set(dtypes)) == 1 and dtypes[0] in ("BF16", "F32"):
            R = [r.view(BITS[ITEMSIZE[dtypes[0]]]) for r in raws]  # bit patterns: compared as stored
            return K.stats_numba(R, R, trans, trans, pairs, tol)
        torch = _torch()
        raws = [torch.from_numpy(r).view(DTYPES[d]) for r, d in zip(raws, dtypes)]
        n = raws[0].numel()
        X = torch.empty((len(raws), n), dtype=torch.float32, device=self.device)
        for i, r in enumerate(raws):
            X[i].copy_(r.to(self.device, non_blocking=True))
        cmp, extra = [], []
        for a, b in trans:
            if dtypes[a] == dtypes[b]:
                cmp.append((a, b))
                continue
            coarse = DTYPES[_coarser(dtypes[a], dtypes[b])]
            rows = []
            for c in (a, b):
                if dtypes[c] == _coarser(dtypes[a], dtypes[b]):
                    rows.append(c)
                else:
                    extra.append(X[c].to(coarse).float())
                    rows.append(len(raws) + len(extra) - 1)
            cmp.append(tuple(rows))
        XB = _bits(torch.cat([X, torch.stack(extra)]) if extra else X)
        if self.backend == "numba":
            return K.stats_numba(X.numpy(), XB.numpy().view(np.uint32), trans, cmp, pairs, tol)
        return K.stats_torch(X, XB, trans, cmp, pairs, tol)

    def _advance(self, nbytes: int, name: str) -> None:
        self.bytes_done += nbytes
        if self.progress:
            self.progress(nbytes, name)

    # -- spectral -------------------------------------------------------------------

    def _f32(self, c: int, name: str, c0: int, c1: int) -> "torch.Tensor":
        torch = _torch()
        x = self.readers[c].rows(name, c0, c1)
        if x.dtype == torch.bfloat16 and self.device.type == "cpu":
            return K.bf16_to_float32(x)
        return x.to(self.device, torch.float32)

    def _fused_blocks(self, name: str, present: list[int], deltas: list[tuple[int, int]], shared: int, cols: int,
                      step: int) -> Iterator[list["torch.Tensor"]]:
        """Row blocks of every W and ΔW in float32, widened in one pass into one reused buffer.

        Each block is valid until the next is requested: peak memory stays one block per matrix.
        """
        count = len(present) + len(deltas)
        if self._spool.size < count * step * cols:
            self._spool = np.empty(count * step * cols, dtype=np.float32)
        for c0 in range(0, shared, step):
            c1 = min(shared, c0 + step)
            n = (c1 - c0) * cols
            out = self._spool[: count * n].reshape(count, n)
            K.widen_with_deltas(self._read_chunk(name, present, c0, c1), deltas, out)
            yield [_torch().from_numpy(out[j]).view(c1 - c0, cols) for j in range(count)]

    def _spectral(self, p: _TensorPlan, present: list[int], active: list[int], records: list[TensorRecord],
                  null_sample) -> None:
        """Spectral metrics of every transition, each on the rows its own two checkpoints share.

        Transitions are grouped by that row count: a vocabulary resized after the first
        checkpoint (1000 → 1008 → 1008 rows) gives base→sft and base→dpo on 1000 rows and
        sft→dpo on all 1008. Each group's W's and ΔW's are decomposed together.
        """
        if any(r.metrics["nonfinite"] for r in records):
            for r in records:
                r.spectral = {"note": "skipped: NaN/Inf entries"}
            return
        groups: dict[int, list[tuple[int, TensorRecord]]] = {}
        for t, rec in zip(active, records):
            tr = self.transitions[t]
            groups.setdefault(min(p.rows[tr.a], p.rows[tr.b]), []).append((t, rec))
        for shared, items in sorted(groups.items()):
            self._spectral_rows(p, shared, [t for t, _ in items], [r for _, r in items], null_sample)

    def _spectral_rows(self, p: _TensorPlan, shared: int, active: list[int], records: list[TensorRecord],
                       null_sample) -> None:
        """Top-k (randomized block Krylov) or exact SVDs of the W's and ΔW's of transitions sharing ``shared`` rows.

        ``topk``: the matrices stay resident as float32 when they fit ``spectral_resident_mb``;
        larger ones are re-read from the files once per pass. ``full``: each matrix is
        materialised and decomposed exactly (``spectral.exact_svd``), one at a time.
        """
        from ptlens.weights import spectral as SP

        torch = _torch()
        cfg = self.cfg
        trans = [self.transitions[t] for t in active]
        present = sorted({c for tr in trans for c in (tr.a, tr.b)})
        cols = p.row_shape[0]
        seed = zlib.crc32(p.name.encode())
        full = cfg.spectral == "full"
        fits = (len(present) + 1) * shared * cols * 4 <= cfg.spectral_resident_mb * (1 << 20)
        resident = {c: self._f32(c, p.name, 0, shared) for c in present} if fits else {}
        step = shared if fits else max(1, self.chunk_elems // cols)
        frob2 = [float(r.sums[K.SUM_D2]) for r in records]
        spectral_deltas = [i for i in range(len(trans)) if frob2[i] != 0.0]

        def rows_of(c: int) -> Iterator["torch.Tensor"]:
            for c0 in range(0, shared, step):
                yield resident[c][c0:c0 + step] if fits else self._f32(c, p.name, c0, min(shared, c0 + step))

        if full:
            def whole(c: int) -> "torch.Tensor":
                return torch.cat(list(rows_of(c))).to(self.device)

            svd = {c: SP.exact_svd(whole(c), cfg.k) for c in present}
            delta = {i: SP.exact_svd(whole(trans[i].b) - whole(trans[i].a), 0, values_only=True)
                     for i in spectral_deltas}
        else:
            cached = {}
            if fits and (len(present) + len(spectral_deltas)) * shared * cols * 4 <= cfg.spectral_resident_mb * (1 << 20):
                cached = {i: resident[trans[i].b] - resident[trans[i].a] for i in spectral_deltas}
            fused = not fits and self.device.type == "cpu" and all(p.dtypes[c] == "BF16" for c in present)

            def blocks():
                if fused:
                    yield from self._fused_blocks(p.name, present, [(present.index(trans[i].a), present.index(trans[i].b))
                                                                    for i in spectral_deltas], shared, cols, step)
                    return
                for c0 in range(0, shared, step):
                    c1 = min(shared, c0 + step)
                    xs = {c: resident[c][c0:c1] if fits else self._f32(c, p.name, c0, c1) for c in present}
                    yield [xs[c] for c in present] + [cached[i][c0:c1] if i in cached else xs[trans[i].b] - xs[trans[i].a]
                                                      for i in spectral_deltas]

            lows = SP.randomized_svd_many(blocks, (shared, cols), len(present) + len(spectral_deltas), cfg.k,
                                         oversample=cfg.oversample, power_iters=cfg.power_iters, seed=seed,
                                         device=self.device)
            self._spool = np.empty(0, dtype=np.float32)  # give the blocks' memory back before the overlap passes
            svd = dict(zip(present, lows))
            delta = {i: lows[len(present) + j] for j, i in enumerate(spectral_deltas)}
        k = cfg.k
        _, drawn = null_sample
        for i, (t, rec, tr) in enumerate(zip(active, records, trans)):
            if frob2[i] == 0:
                spec = {"stable_rank": None, "top1_energy": None, f"top{k}_energy": None}
                if full:
                    spec.update(effective_rank=None, rank_fraction=0.0)
            else:
                d = delta[i]
                spec = SP.delta_spectrum(d.S, frob2[i], (shared, cols), full, ks=(1, k))
                spec.update(SP.spectrum_errors(d.S, d.err, frob2[i], ks=(1, k)))
            if t in drawn:
                ch, dnull = drawn[t]
                rn = N.rank_nulls(dnull, (shared, cols), seed)
                spec["stable_rank_null"] = rn["stable_rank_null"]
                if full:
                    spec["rank_fraction_null"] = rn["rank_fraction_null"]
            sa, sb = svd[tr.a], svd[tr.b]
            spec["subspace_angle_u_mean"], spec["subspace_angle_u_max"] = SP.principal_angles_deg(sa.U, sb.U)
            spec["subspace_angle_v_mean"], spec["subspace_angle_v_max"] = SP.principal_angles_deg(sa.V, sb.V)
            spec["spectral_drift"] = SP.spectral_drift(sa.S[:k], sb.S[:k])
            rec.spectral = spec
        with _heap_temporaries() if fits else contextlib.nullcontext():
            self._overlaps(p, shared, step, active, records, trans, svd, null_sample)

    def _overlaps(self, p, shared, step, active, records, trans, svd, null_sample) -> None:
        """principal_overlap of each transition out of each source checkpoint, and its null on the sampled rows."""
        from ptlens.weights import spectral as SP

        torch = _torch()
        idx, drawn = null_sample
        by_source: dict[int, list[int]] = {}
        for i, tr in enumerate(trans):
            by_source.setdefault(tr.a, []).append(i)
        sample = torch.as_tensor(idx[idx < shared], dtype=torch.long)
        for a, idxs in by_source.items():
            low = svd[a]
            k = low.U.shape[1]
            US = (low.U * low.S[:k].to(low.U.dtype)).float()
            V = low.V.float()
            ends = [trans[i].b for i in idxs]

            def recon(US=US, V=V):
                for c0 in range(0, shared, step):
                    yield US[c0:min(shared, c0 + step)] @ V.T

            def changed(a=a, ends=ends):
                for c0 in range(0, shared, step):
                    c1 = min(shared, c0 + step)
                    ra = self.readers[a].rows(p.name, c0, c1)
                    yield torch.stack([_changed_mask(ra, self.readers[b].rows(p.name, c0, c1), p.dtypes[a], p.dtypes[b])
                                       for b in ends]).to(self.device)

            results, threshold = SP.principal_overlap_threshold(recon, changed, shared * p.row_shape[0], self.cfg.alpha)
            rs = (US[sample.to(US.device)] @ V.T).cpu().numpy() if len(sample) else None
            for i, (ov, _, _) in zip(idxs, results):
                records[i].spectral["principal_overlap"] = ov
                t = active[i]
                if t in drawn and rs is not None:
                    ch = drawn[t][0][: len(sample)]
                    records[i].spectral["principal_overlap_null"] = N.principal_overlap_null(rs, threshold, ch)
