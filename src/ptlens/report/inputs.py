"""What ``ptlens report`` reads: the stored results of the weight scan and the behaviour run, nothing else."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ptlens.errors import PtlensError

SUMMARY = "weights/summary.json"
RESULTS = "model_comparison_results.json"
SAMPLES = "behavior/samples.jsonl"


@dataclass
class ReportInputs:
    out_dir: Path
    summary: dict | None = None
    results: dict | None = None
    samples: list[dict] | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    """Relative path → sha256 of every input file read."""

    @property
    def lineage(self) -> dict:
        return (self.summary or {}).get("lineage") or (self.results or {}).get("lineage") or {"checkpoints": []}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PtlensError(f"{path}: unreadable ({e.strerror})") from None


def _json(path: Path, data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise PtlensError(f"{path}: not valid JSON ({e}); rerun `ptlens {what}` to write it again") from None
    if not isinstance(obj, dict):
        raise PtlensError(f"{path}: expected a JSON object; rerun `ptlens {what}` to write it again")
    return obj


def load_inputs(out_dir: str | Path) -> ReportInputs:
    """Read whatever results the folder holds; a folder with neither weights nor behaviour is an error."""
    out = Path(out_dir)
    if not out.is_dir():
        raise PtlensError(f"{out}: no such folder (give the --output-dir of ptlens run / weights / behavior)")
    inp = ReportInputs(out)
    f = out / SUMMARY
    if f.is_file():
        data = _read(f)
        inp.hashes[SUMMARY] = hashlib.sha256(data).hexdigest()
        inp.summary = _json(f, data, "weights")
        for key in ("lineage", "transitions", "aggregates"):
            if key not in inp.summary:
                raise PtlensError(f"{f}: field {key!r} missing (not written by ptlens weights?)")
    f = out / RESULTS
    if f.is_file():
        data = _read(f)
        inp.hashes[RESULTS] = hashlib.sha256(data).hexdigest()
        inp.results = _json(f, data, "behavior")
        if not isinstance(inp.results.get("models"), dict):
            raise PtlensError(f"{f}: field 'models' missing (not written by ptlens behavior?)")
    f = out / SAMPLES
    if f.is_file():
        data = _read(f)
        inp.hashes[SAMPLES] = hashlib.sha256(data).hexdigest()
        rows = []
        for i, line in enumerate(data.decode("utf-8", errors="replace").split("\n")):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise PtlensError(f"{f}: line {i + 1} is not JSON") from None
            if isinstance(row, dict):
                rows.append(row)
        inp.samples = rows
    if inp.summary is None and inp.results is None:
        raise PtlensError(f"{out}: no stored results ({SUMMARY} or {RESULTS}); run `ptlens weights` or "
                          "`ptlens behavior` with this --output-dir first")
    return inp
