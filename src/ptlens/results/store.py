"""Typed records of what ptlens stores, and their load/save with a schema version.

- :class:`WeightSummary` ↔ ``weights/summary.json`` (aggregates, lineage, settings of a scan)
- :class:`TensorRow` ↔ one row of ``weights/tensors.csv`` (columns from :mod:`ptlens.results.registry`)
- :class:`BehaviorResults` ↔ ``model_comparison_results.json``
- :class:`SampleRecord` ↔ one line of ``behavior/samples.jsonl``

Every JSON document carries ``"schema"``: the version of its layout. A file without it (written
before versioning) still loads as version 0; a file from a newer ptlens (a version above the one this
code reads) stops with one line saying so, rather than a KeyError deep in the report. Unknown keys are
kept (``extra``) so that a round trip loses nothing. No numpy or torch here.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from ptlens.errors import PtlensError
from ptlens.results import files as F
from ptlens.results.rows import (AggregateRow, CosineRow, Estimate, ModelStats, PairComparison, ProblemStats,
                                TransitionRef, estimates)

WEIGHTS_SCHEMA = 1
"""weights/summary.json: 1 = this layout with ``schema``; 0 = the same layout before the field existed."""
BEHAVIOR_SCHEMA = 1
"""model_comparison_results.json (already carried ``schema`` 1)."""


def check_schema(doc: dict, path: Path | str, supported: int, command: str) -> int:
    """The document's schema version (0 when absent); a newer or malformed one is a one-line error."""
    v = doc.get("schema", 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise PtlensError(f"{path}: schema {v!r} is not a version number; rerun `ptlens {command}` to write it again")
    if v > supported:
        raise PtlensError(f"{path}: written by a newer ptlens (schema {v}; this version reads up to {supported}); "
                          f"upgrade ptlens or rerun `ptlens {command}`")
    return v


def read_document(path: Path, command: str) -> tuple[dict, bytes]:
    """A JSON object from ``path`` and its bytes; unreadable or not an object: one line naming the command to rerun."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PtlensError(f"{path}: unreadable ({e.strerror})") from None
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise PtlensError(f"{path}: not valid JSON ({e}); rerun `ptlens {command}` to write it again") from None
    if not isinstance(obj, dict):
        raise PtlensError(f"{path}: expected a JSON object; rerun `ptlens {command}` to write it again")
    return obj, data


def _split(d: dict, cls) -> tuple[dict, dict]:
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in d.items() if k in names}, {k: v for k, v in d.items() if k not in names}


# ---------------------------------------------------------------- weights


@dataclass
class WeightSummary:
    """weights/summary.json: what a scan measured, aggregated (per model, group, kind, layer) and its context."""

    lineage: dict
    settings: dict
    transitions: list[dict]
    aggregates: dict[str, list[dict]]
    added_rows: list[dict] = field(default_factory=list)
    tied_embeddings: dict[str, bool] = field(default_factory=dict)
    missing_tensors: dict[str, list[str]] = field(default_factory=dict)
    skipped_tensors: dict[str, str] = field(default_factory=dict)
    nonfinite: list[dict] = field(default_factory=list)
    tensors_scanned: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    throughput_gb_per_s: float | None = None
    figures: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    schema: int = WEIGHTS_SCHEMA
    extra: dict = field(default_factory=dict)
    """Keys this version does not know, kept for the round trip."""

    ORDER = ("schema", "ptlens", "versions", "command", "lineage", "settings", "transitions", "aggregates",
             "added_rows", "tied_embeddings", "missing_tensors", "skipped_tensors", "nonfinite", "tensors_scanned",
             "bytes_read", "seconds", "throughput_gb_per_s", "figures")

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        d["ptlens"] = "weights"
        d.update(self.extra)
        return {**{k: d.pop(k) for k in self.ORDER if k in d}, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "WeightSummary":
        known, extra = _split(d, cls)
        extra.pop("ptlens", None)
        return cls(**known, extra=extra)

    @classmethod
    def coerce(cls, s: "WeightSummary | dict | None") -> "WeightSummary | None":
        """The record itself, or one made from a summary dict (which may lack fields a hand-made test dict omits);
        None for None or an empty dict."""
        if not s or isinstance(s, WeightSummary):
            return s or None
        return cls.from_dict({"lineage": {}, "settings": {}, "transitions": [], "aggregates": {}, **s})

    @property
    def checkpoints(self) -> list[dict]:
        return (self.lineage or {}).get("checkpoints") or []

    def transition_refs(self) -> list[TransitionRef]:
        return [TransitionRef.from_dict(t) for t in self.transitions]

    def rows(self, scope: str, transition: str | None = None) -> list[AggregateRow]:
        """Aggregate rows of one scope (model, group, kind, layer, …), optionally of one transition."""
        return [AggregateRow.from_dict(r) for r in (self.aggregates or {}).get(scope) or []
                if transition is None or r.get("transition") == transition]

    def row(self, scope: str, transition: str, key: Sequence = ()) -> AggregateRow | None:
        """The row of one transition and key (``()`` for the whole scope, e.g. ``("mlp",)`` in scope "group")."""
        return next((r for r in self.rows(scope, transition) if r.key == tuple(key)), None)

    def cosines(self, scope: str = "delta_cosine_model") -> list[CosineRow]:
        """cos(ΔW₁, ΔW₂) rows of one ``delta_cosine_*`` scope."""
        return [CosineRow.from_dict(r) for r in (self.aggregates or {}).get(scope) or []]


def save_weight_summary(out_dir: str | Path, summary: WeightSummary | dict) -> Path:
    from ptlens.io import write_json

    s = summary if isinstance(summary, WeightSummary) else WeightSummary.from_dict(summary)
    path = Path(out_dir) / F.WEIGHT_SUMMARY
    write_json(path, s.to_dict())
    return path


def load_weight_summary(out_dir: str | Path, required: bool = True) -> WeightSummary | None:
    """The stored weight summary; None (or, when ``required``, a one-line error) when the folder has none."""
    path = Path(out_dir) / F.WEIGHT_SUMMARY
    if not path.is_file():
        if required:
            raise PtlensError(f"{path}: no weight results here (run `ptlens weights` first)")
        return None
    return parse_weight_summary(*read_document(path, "weights"), path=path)[0]


def parse_weight_summary(doc: dict, data: bytes = b"", path: Path | str = F.WEIGHT_SUMMARY) -> tuple[WeightSummary, bytes]:
    check_schema(doc, path, WEIGHTS_SCHEMA, "weights")
    for key in ("lineage", "transitions", "aggregates"):
        if key not in doc:
            raise PtlensError(f"{path}: field {key!r} missing (not written by ptlens weights?)")
    doc = {**doc, "schema": doc.get("schema", 0)}
    return WeightSummary.from_dict(doc), data


@dataclass
class TensorRow:
    """One row of weights/tensors.csv: one tensor × transition with every metric, error estimate and null."""

    tensor: str
    transition: str
    transition_kind: str
    kind: str
    group: str
    layer: int | None
    shape: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    rows_a: int
    rows_b: int
    added_rows: int
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    """Registered metric columns (value, ``_err``, ``_null``) → value; None where not computed."""
    sums: dict[str, float] = field(default_factory=dict)
    """The kernel's raw sums (registry.SUM_COLUMNS)."""
    null_entries: int = 0

    def cells(self, columns: Sequence[str]) -> list[str]:
        ids = {"tensor": self.tensor, "transition": self.transition, "transition_kind": self.transition_kind,
               "kind": self.kind, "group": self.group, "layer": "" if self.layer is None else self.layer,
               "shape": "x".join(map(str, self.shape)), "dtype_a": self.dtype_a, "dtype_b": self.dtype_b,
               "rows_a": self.rows_a, "rows_b": self.rows_b, "added_rows": self.added_rows,
               "null_entries": self.null_entries}
        out = []
        for c in columns:
            if c in ids:
                out.append(str(ids[c]))
            elif c in self.sums:
                out.append(fmt_cell(float(self.sums[c])))
            else:
                out.append(fmt_cell(self.metrics.get(c)))
        return out

    @classmethod
    def from_cells(cls, row: dict[str, str]) -> "TensorRow":
        from ptlens.results.registry import ID_COLUMNS, SUM_COLUMNS, TAIL_COLUMNS

        shape = tuple(int(x) for x in row["shape"].split("x")) if row.get("shape") else ()
        return cls(tensor=row["tensor"], transition=row["transition"], transition_kind=row["transition_kind"],
                   kind=row["kind"], group=row["group"], layer=int(row["layer"]) if row.get("layer") else None,
                   shape=shape, dtype_a=row["dtype_a"], dtype_b=row["dtype_b"], rows_a=int(row["rows_a"]),
                   rows_b=int(row["rows_b"]), added_rows=int(row["added_rows"]),
                   metrics={k: parse_cell(v) for k, v in row.items()
                            if k not in ID_COLUMNS and k not in SUM_COLUMNS and k not in TAIL_COLUMNS},
                   sums={k: float(row[k]) for k in SUM_COLUMNS if k in row},
                   null_entries=int(row.get("null_entries") or 0))


def fmt_cell(v: Any) -> str:
    """A CSV cell: '' for None, repr for floats (round-trips exactly), inf/nan spelled out."""
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


def parse_cell(s: str) -> float | int | str | None:
    if s == "":
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def write_tensor_rows(path: str | Path, rows: Iterable[TensorRow], columns: Sequence[str]) -> None:
    from ptlens.io import atomic_open

    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(r.cells(columns))


def read_tensor_rows(path: str | Path) -> list[TensorRow]:
    return [TensorRow.from_cells(r) for r in read_csv(path)]


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(io.StringIO(f.read())))


# ---------------------------------------------------------------- behaviour


@dataclass
class BehaviorResults:
    """model_comparison_results.json: the settings, lineage, problems and every metric of a behaviour run.

    ``metrics`` holds what :func:`ptlens.behavior.metrics.compare_models` returns (ks, models, consecutive,
    cross_ppl, cross_kl, bootstrap, test, …), stored flat in the file beside the header fields.
    """

    settings: dict
    lineage: dict
    metrics: dict
    models_info: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    headline_problems: dict = field(default_factory=dict)
    by_tag: dict = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    created: str | None = None
    command: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    kind: str = "ptlens.behavior"
    schema: int = BEHAVIOR_SCHEMA

    HEAD = ("schema", "kind", "created", "command", "settings", "versions", "lineage", "models_info", "problems")
    TAIL = ("headline_problems", "by_tag", "figures")

    @classmethod
    def coerce(cls, r: "BehaviorResults | dict | None") -> "BehaviorResults | None":
        """The record itself, or one made from a results dict; None for None or an empty dict."""
        return None if not r else r if isinstance(r, BehaviorResults) else cls.from_dict(r)

    @property
    def models(self) -> dict[str, ModelStats]:
        """Model name → its behaviour, in lineage order."""
        return {n: ModelStats.from_dict(n, m) for n, m in (self.metrics.get("models") or {}).items()}

    @property
    def names(self) -> list[str]:
        return list(self.metrics.get("models") or {})

    @property
    def ks(self) -> list[int]:
        return self.metrics.get("ks") or []

    @property
    def consecutive(self) -> list[PairComparison]:
        """Neighbouring pairs with their paired differences (later − earlier)."""
        return [PairComparison.from_dict(c) for c in self.metrics.get("consecutive") or []]

    def per_problem(self, name: str) -> list[ProblemStats]:
        """One model's per-problem counts, in problem order."""
        return [ProblemStats.from_dict(r) for r in (self.metrics.get("per_problem") or {}).get(name) or []]

    @property
    def level(self) -> float | None:
        """The level of the stored bootstrap intervals (0.95), None when the run did not store one."""
        lv = (self.metrics.get("bootstrap") or {}).get("level")
        return float(lv) if isinstance(lv, (int, float)) and not isinstance(lv, bool) and 0 < lv < 1 else None

    def cross(self, name: str = "cross_ppl") -> dict[str, dict[str, Estimate]]:
        """Whose responses → scoring model → estimate (``cross_ppl`` or ``cross_kl``)."""
        return {a: estimates(by) for a, by in (self.metrics.get(name) or {}).items()}

    def to_dict(self) -> dict:
        d = asdict(self)
        out = {k: d[k] for k in self.HEAD}
        out.update(self.metrics)
        out.update({k: d[k] for k in self.TAIL if k != "figures" or self.figures})
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "BehaviorResults":
        head = {k: d[k] for k in (*cls.HEAD, *cls.TAIL) if k in d}
        rest = {k: v for k, v in d.items() if k not in head}
        head.setdefault("settings", {})
        head.setdefault("lineage", {})
        return cls(**head, metrics=rest)


def save_behavior_results(out_dir: str | Path, results: BehaviorResults | dict) -> Path:
    from ptlens.io import write_json

    r = results if isinstance(results, BehaviorResults) else BehaviorResults.from_dict(results)
    path = Path(out_dir) / F.BEHAVIOR_RESULTS
    write_json(path, r.to_dict())
    return path


def load_behavior_results(out_dir: str | Path, required: bool = True) -> BehaviorResults | None:
    path = Path(out_dir) / F.BEHAVIOR_RESULTS
    if not path.is_file():
        if required:
            raise PtlensError(f"{path}: no behaviour results here (run `ptlens behavior` first)")
        return None
    return parse_behavior_results(*read_document(path, "behavior"), path=path)[0]


def parse_behavior_results(doc: dict, data: bytes = b"", path: Path | str = F.BEHAVIOR_RESULTS
                           ) -> tuple[BehaviorResults, bytes]:
    check_schema(doc, path, BEHAVIOR_SCHEMA, "behavior")
    if not isinstance(doc.get("models"), dict):
        raise PtlensError(f"{path}: field 'models' missing (not written by ptlens behavior?)")
    return BehaviorResults.from_dict({**doc, "schema": doc.get("schema", 0)}), data


@dataclass
class SampleRecord:
    """One line of ``samples.jsonl``: a model's answer to a problem, graded and (after the run) scored."""

    model: str
    label: str
    problem_id: str
    sample: int
    prompt: str
    response: str
    gold: str
    extracted: str | None
    answer_key: str
    correct: bool
    tokens: int
    truncated: bool
    finish: str
    seed: int
    token_ids: list[int]
    extracted_flexible: str | None = None
    """lm-eval's "flexible-extract" beside the strict ``extracted``: the response's last number (docs/GRADING.md)."""
    correct_flexible: bool | None = None
    grading_fallback: str | None = None
    """None when math-verify graded; "timeout" / "error" when it overran or failed and plain numbers were compared."""
    logprob_sum: float | None = None
    mean_logprob: float | None = None
    entropy_sum: float | None = None
    mean_entropy: float | None = None
    cross_logprobs: dict[str, dict[str, float]] = field(default_factory=dict)
    """scorer model → {"logprob_sum", "tokens", "mean_logprob", "kl_sum", "kl_inf_tokens"} of this response under it
    (the KL fields: from this model's sampling distribution to the scorer's; None when vocabularies differ)."""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.model, self.problem_id, self.sample)

    @classmethod
    def from_dict(cls, d: dict) -> "SampleRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


def write_samples(path: str | Path, records: Iterable[SampleRecord]) -> None:
    """The merged samples, one JSON object per line, written atomically."""
    from ptlens.io import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")


def read_sample_rows(path: str | Path) -> tuple[list[dict], bytes]:
    """Every JSON object line of a samples file (blank lines skipped) and the file's bytes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PtlensError(f"{path}: unreadable ({e.strerror})") from None
    rows = []
    for i, line in enumerate(data.decode("utf-8", errors="replace").split("\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise PtlensError(f"{path}: line {i + 1} is not JSON") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows, data


def load_samples(out_dir: str | Path) -> list[SampleRecord]:
    """The merged samples of a finished behaviour run (for reports and custom analyses)."""
    path = Path(out_dir) / F.SAMPLES_JSONL
    if not path.is_file():
        raise PtlensError(f"{path}: no behaviour samples (run ptlens behavior first)")
    return [SampleRecord.from_dict(r) for r in read_sample_rows(path)[0]]
