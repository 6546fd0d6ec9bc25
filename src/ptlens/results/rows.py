"""Typed rows inside the stored documents: what the report and the verdicts read.

``weights/summary.json`` holds aggregate rows (one per transition × scope key, metric columns from
:mod:`ptlens.results.registry`) and cosine rows between transitions; ``model_comparison_results.json``
holds, per model, estimates with intervals and, per neighbouring pair, paired differences. These
classes are views parsed from the stored dicts (:class:`~ptlens.results.store.WeightSummary` and
:class:`~ptlens.results.store.BehaviorResults` make them); the files themselves are written from the
dicts, so a round trip never reorders a byte. No numpy here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ptlens.stats.estimate import Estimate, finite_number as number  # noqa: F401  (Estimate: the rows' estimate type)


# ---------------------------------------------------------------- weights


@dataclass(frozen=True)
class TransitionRef:
    """One scanned transition: checkpoint ``a`` → checkpoint ``b`` (indices in the lineage)."""

    name: str
    a: int
    b: int
    kind: str = ""

    @classmethod
    def from_dict(cls, d: Mapping) -> "TransitionRef":
        return cls(str(d["name"]), int(d["a"]), int(d["b"]), str(d.get("kind") or ""))


@dataclass(frozen=True)
class AggregateRow:
    """One aggregate row of any scope (model, group, kind, layer, layer_group, layer_kind): a transition, the scope's
    key (``()`` for the whole model, ``("mlp",)`` for a group, ``(3,)`` for a layer) and its metric columns."""

    transition: str
    key: tuple
    values: Mapping[str, Any] = field(default_factory=dict)
    """Metric column → stored value (``rel_change``, ``changed_exact_null``, ``stable_rank_wmean`` …)."""

    @classmethod
    def from_dict(cls, d: Mapping) -> "AggregateRow":
        return cls(str(d.get("transition")), tuple(d.get("key") or ()),
                   {k: v for k, v in d.items() if k not in ("transition", "key")})

    def value(self, metric: str) -> float | None:
        """The metric as stored (inf included) as a float; None where it was not computed."""
        v = self.values.get(metric)
        return float(v) if isinstance(v, (int, float)) else None

    def finite(self, metric: str) -> float | None:
        return number(self.values.get(metric))

    def null(self, metric: str) -> float | None:
        """The stored null of ``metric``: ``<metric>_null`` (or ``x_null_wmean`` for ``x_wmean``)."""
        names = [f"{metric}_null"] + ([metric.replace("_wmean", "_null_wmean")] if metric.endswith("_wmean") else [])
        return next((v for v in (self.finite(n) for n in names) if v is not None), None)

    def null_pairs(self) -> dict[str, tuple[float, float]]:
        """{metric: (observed, null)} for every metric with a stored null."""
        out = {}
        for k in self.values:
            if "_null" not in k:
                continue
            base = k.replace("_null", "")
            obs, nul = self.finite(base), self.finite(k)
            if obs is not None and nul is not None:
                out[base] = (obs, nul)
        return out


def largest(rows: Sequence[AggregateRow], metric: str, n: int) -> list[AggregateRow]:
    """The ``n`` rows with the largest ``metric`` (missing counts as 0), ties in stored order."""
    return sorted(rows, key=lambda r: -(r.values.get(metric) or 0))[:n]


@dataclass(frozen=True)
class CosineRow:
    """cos(ΔW₁, ΔW₂) between two transitions' updates over one scope key (``delta_cosine_*`` scopes)."""

    t1: str
    t2: str
    key: tuple
    delta_cosine: float | None
    tensors: int = 0

    @classmethod
    def from_dict(cls, d: Mapping) -> "CosineRow":
        return cls(str(d.get("t1")), str(d.get("t2")), tuple(d.get("key") or ()), number(d.get("delta_cosine")),
                   int(d.get("tensors") or 0))


# ---------------------------------------------------------------- behaviour


def estimates(d: Mapping | None) -> dict[str, Estimate]:
    """{name: Estimate} of a stored {name: {"value", "lo", "hi", …}} mapping, skipping what is not an estimate."""
    out = {}
    for k, v in (d or {}).items():
        e = Estimate.from_dict(v)
        if e is not None:
            out[k] = e
    return out


@dataclass(frozen=True)
class ModelStats:
    """One model's behaviour: every registered metric as an estimate over problems, and its counts."""

    name: str
    metrics: Mapping[str, Estimate]
    n_problems: int | None = None
    n_samples: int | None = None
    """Samples in all (problems × samples per problem)."""
    accuracy_flexible: Estimate | None = None

    @classmethod
    def from_dict(cls, name: str, d: Mapping | None) -> "ModelStats":
        d = d or {}
        n_p, n_s = d.get("n_problems"), d.get("n_samples")
        return cls(name, estimates(d.get("metrics")), n_p if isinstance(n_p, int) else None,
                   n_s if isinstance(n_s, int) else None, Estimate.from_dict(d.get("accuracy_flexible")))

    def value(self, metric: str) -> float | None:
        e = self.metrics.get(metric)
        return None if e is None else e.value


@dataclass(frozen=True)
class ProblemStats:
    """One model's samples of one problem: how many, how many correct, its modal answer and that answer's share."""

    id: str
    n: int
    correct: int
    modal_answer: str | None = None
    answer_confidence: float | None = None
    distinct_answers: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping) -> "ProblemStats":
        return cls(str(d.get("id")), int(d.get("n") or 0), int(d.get("correct") or 0), d.get("modal_answer"),
                   number(d.get("answer_confidence")), d.get("distinct_answers"))

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None


@dataclass(frozen=True)
class PairComparison:
    """A neighbouring pair a → b: paired differences (b − a) over the same problems, and the solved sets."""

    a: str
    b: str
    difference: Mapping[str, Estimate]
    solved_sets: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping) -> "PairComparison":
        return cls(str(d.get("a")), str(d.get("b")), estimates(d.get("difference")), dict(d.get("solved_sets") or {}))
