"""The scan's records: one per tensor × transition (:class:`TensorRecord`) and per tensor × Δ pair
(:class:`PairRecord`), what one task returns (:class:`TensorResult`), and the whole scan
(:class:`ScanResult`) that :func:`merge_results` assembles in plan order for the aggregates and outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import numpy as np

from ptlens.errors import PtlensError
from ptlens.resolve import Lineage
from ptlens.weights.config import ScanConfig
from ptlens.weights.plan import Transition

if TYPE_CHECKING:
    from ptlens.weights.plan import ScanPlan


@dataclass
class TensorRecord:
    """One tensor × one transition: every metric of docs/METRICS.md, plus the sums that aggregate."""

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
class TensorResult:
    """What one task returns: its rows of tensors.csv and delta-cosine sums, and the bytes it read."""

    index: int
    name: str
    records: list[TensorRecord]
    pairs: list[PairRecord]
    bytes_read: int
    seconds: float


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
