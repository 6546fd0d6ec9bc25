"""What ``ptlens report`` reads: the stored results of the weight scan and the behaviour run, nothing else.

Every file is read through :mod:`ptlens.results.store` (names, schema versions, checks); the report
imports no sampling or scanning code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ptlens.errors import PtlensError
from ptlens.results import files as F
from ptlens.results.store import (BehaviorResults, WeightSummary, parse_behavior_results, parse_weight_summary,
                                  read_document, read_sample_rows)

SUMMARY = F.WEIGHT_SUMMARY
RESULTS = F.BEHAVIOR_RESULTS
SAMPLES = F.SAMPLES_JSONL


@dataclass
class ReportInputs:
    out_dir: Path
    weights: WeightSummary | None = None
    behavior: BehaviorResults | None = None
    samples: list[dict] | None = None
    """The sample lines as stored (dicts: the browser shows what a malformed line holds rather than refusing it)."""
    hashes: dict[str, str] = field(default_factory=dict)
    """Relative path → sha256 of every input file read."""

    @property
    def lineage(self) -> dict:
        return (self.weights and self.weights.lineage) or (self.behavior and self.behavior.lineage) or {"checkpoints": []}


def _document(out: Path, name: str, kind: str, parse, hashes: dict[str, str]):
    """The typed record of one stored JSON result, checked by ``parse``; None when it is absent."""
    f = out / name
    if not f.is_file():
        return None
    doc, data = read_document(f, kind)
    record = parse(doc, data, f)[0]
    hashes[name] = hashlib.sha256(data).hexdigest()
    return record


def load_inputs(out_dir: str | Path) -> ReportInputs:
    """Read whatever results the folder holds; a folder with neither weights nor behaviour is an error."""
    out = Path(out_dir)
    if not out.is_dir():
        raise PtlensError(f"{out}: no such folder (give the --output-dir of ptlens run / weights / behavior)")
    inp = ReportInputs(out)
    inp.weights = _document(out, SUMMARY, "weights", parse_weight_summary, inp.hashes)
    inp.behavior = _document(out, RESULTS, "behavior", parse_behavior_results, inp.hashes)
    f = out / SAMPLES
    if f.is_file():
        rows, data = read_sample_rows(f)
        inp.hashes[SAMPLES] = hashlib.sha256(data).hexdigest()
        inp.samples = rows
    if inp.weights is None and inp.behavior is None:
        raise PtlensError(f"{out}: no stored results ({SUMMARY} or {RESULTS}); run `ptlens weights` or "
                          "`ptlens behavior` with this --output-dir first")
    return inp
