"""The stored mechanism results as typed records: ``mechanism/summary.json`` and ``mechanism/adl.json``.

The mechanism stage writes them (:func:`ptlens.mechanism.run.run_mechanism`); the report's Mechanism section
reads them here, never the dicts. Values are kept as stored (a CSV-like row may hold ``None`` or ``""`` for
"not computed"); :func:`cell` turns one into a float or None.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ptlens.errors import PtlensError
from ptlens.results import files as F
from ptlens.results.store import check_schema, read_document

MECHANISM_SCHEMA = 1
"""mechanism/summary.json: 1 = this layout."""


def cell(v: Any) -> float | None:
    """A stored value as a float (inf kept); None for "not computed" (None or an empty cell)."""
    return None if v is None or v == "" else float(v)


@dataclass(frozen=True)
class LayerRow:
    """One transition × layer (−1 = embeddings): same inputs through A and B."""

    transition: str
    layer: int
    cka: float | None
    act_rel_diff: float | None
    """Mean relative activation change ‖h_B − h_A‖ / ‖h_A‖."""
    logit_lens_kl: float | None
    """KL(p_A ‖ p_B) per token of the logit lens at this layer (nats)."""

    @classmethod
    def from_dict(cls, d: Mapping) -> "LayerRow":
        return cls(str(d["transition"]), int(d["layer"]), cell(d.get("cka")), cell(d.get("act_rel_diff")),
                   cell(d.get("logit_lens_kl")))


@dataclass(frozen=True)
class TransplantRow:
    """One row of the transplant table: a model ("model": A or B), a hybrid A + ΔW[part] ("part") or the sum over one
    partition's parts ("sum"), with estimates stored as ``x``, ``x_lo``, ``x_hi`` (and ``x_lo_fw``, the family-wise
    lower bound)."""

    transition: str
    row: str
    partition: str
    part: str
    values: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping) -> "TransplantRow":
        return cls(str(d["transition"]), str(d.get("row") or ""), str(d.get("partition") or ""), str(d.get("part")),
                   dict(d))

    def value(self, key: str) -> float | None:
        return cell(self.values.get(key))

    def lower(self, key: str) -> float | None:
        """The family-wise lower bound of ``key`` where stored (parts), else its interval's lower end."""
        return cell(self.values.get(f"{key}_lo_fw", self.values.get(f"{key}_lo")))

    def raw(self, key: str) -> Any:
        return self.values.get(key)


@dataclass(frozen=True)
class MechanismSummary:
    """What ``ptlens mechanism`` measured: per-layer rows, transplant rows, and the activation difference lens."""

    transitions: list[str]
    layers: list[LayerRow]
    transplant: list[TransplantRow]
    n_problems: int | None = None
    plain_texts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None
    settings: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    adl: dict | None = None
    """``adl.json`` as stored (per transition and layer: the promoted and suppressed tokens)."""
    doc: dict = field(default_factory=dict, repr=False, compare=False)
    """The stored document, for the figure writers that redraw from it."""
    sha256: str = ""

    @classmethod
    def from_dict(cls, d: Mapping, adl: dict | None = None, sha256: str = "") -> "MechanismSummary":
        layers = [LayerRow.from_dict(r) for r in d.get("layers") or []]
        names = list(d.get("transitions") or dict.fromkeys(r.transition for r in layers))
        return cls(names, layers, [TransplantRow.from_dict(r) for r in d.get("transplant") or []], d.get("n_problems"),
                   list(d.get("plain_texts") or []), list(d.get("notes") or []), d.get("seconds"),
                   dict(d.get("settings") or {}), dict(d.get("files") or {}), adl, dict(d), sha256)

    @classmethod
    def coerce(cls, s: "MechanismSummary | Mapping | None") -> "MechanismSummary | None":
        return None if not s else s if isinstance(s, MechanismSummary) else cls.from_dict(s)


def load_mechanism(out_dir: str | Path) -> MechanismSummary | None:
    """The stored mechanism results of a folder; None when it has none. A summary that is not JSON, or from a newer
    ptlens, is a one-line error; an unreadable adl.json leaves the lens out."""
    out = Path(out_dir)
    path = out / F.MECHANISM_SUMMARY
    if not path.is_file():
        return None
    doc, data = read_document(path, "mechanism")
    check_schema(doc, path, MECHANISM_SCHEMA, "mechanism")
    adl_path, adl = out / F.MECHANISM_ADL, None
    if adl_path.is_file():
        try:
            adl = read_document(adl_path, "mechanism")[0]
        except PtlensError:
            adl = None
    return MechanismSummary.from_dict(doc, adl, hashlib.sha256(data).hexdigest())
