"""The scan's plan for its settings (:class:`~ptlens.weights.config.ScanConfig`): the transitions and Δ pairs it
measures, and the tensors paired by name across checkpoints, cut into data-only tasks (:func:`plan_scan`), one per tensor name.

A task is plain data (what to read, what to compute): :func:`ptlens.weights.tensor_scan.scan_tensor` runs one
anywhere, and :func:`ptlens.weights.records.merge_results` puts the results back in this plan's order.
Planning reads the checkpoints' headers only: no weights, no torch.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Literal

from ptlens.errors import ArchitectureMismatch, PtlensError
from ptlens.resolve import Lineage
from ptlens.weights.config import ScanConfig
from ptlens.weights.index import ITEMSIZE, CheckpointIndex, TensorInfo, align_tied_heads
from ptlens.weights.memory import check_full_memory
from ptlens.weights.names import TensorRole, parse_name


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


def _torch():
    """torch, imported on first need: the spectral pass, a GPU, float16/float8 checkpoints. An element-wise
    (``--spectral off``) scan of bfloat16 or float32 checkpoints on CPU never imports it (1.1 s of start-up)."""
    import torch

    return torch


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
