"""The lineage as the report sees it: stages, their roles, trajectories and the transitions that measure them.

Pure functions of the lineage and transition lists stored in ``weights/summary.json`` (or in
``model_comparison_results.json``): no files, no models.

A *stage* is a run of neighbouring checkpoints that share a label; a stage with several
checkpoints is a training *trajectory* (``rlvr@step_200``, ``rlvr@step_400`` … or ``rlvr#1``,
``rlvr#2`` …). The stage *starts* at the checkpoint before its first member and *ends* at its
last member; its *span* is the transition start → end, the whole stage. Every question (learning
dynamics, sample efficiency, transfer, convergence) measures a stage by this one span: a part of
a stage (its first step, say) never stands in for the whole, so stages of one and of several
checkpoints compare like with like. A span the scan did not store is not measured (its
distance may still be derived exactly from stored steps and cosines, see :meth:`Transitions.distance`). Its *role* (base, sft, dpo, rlvr) comes from the label, else from the stage facts'
algorithm; the hypotheses of the plan name roles, so a lineage without an SFT or an RLVR stage
gets no directional test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from ptlens.results.rows import AggregateRow
from ptlens.results.store import WeightSummary

ROLES = ("base", "sft", "dpo", "rlvr")
ITEM_FIELDS = {"sft": "examples", "dpo": "pairs", "rlvr": "prompts"}
_STEP = re.compile(r"step[_\-]?(\d+)", re.IGNORECASE)
_ORDINAL = re.compile(r"#(\d+)$")


def role_of(label: str, facts: dict | None = None) -> str | None:
    """base / sft / dpo / rlvr from a stage label, else from its facts' algorithm; None if neither says."""
    lab = label.lower()
    for role, prefixes in (("base", ("base", "pretrain")), ("sft", ("sft",)), ("dpo", ("dpo",)),
                           ("rlvr", ("rlvr", "grpo", "ppo", "rl-", "rl_"))):
        if lab.startswith(prefixes) or lab == "rl":
            return role
    alg = ((facts or {}).get("algorithm") or "").lower()
    if not alg:
        return None
    if "pretrain" in alg:
        return "base"
    if "dpo" in alg or "preference" in alg:
        return "dpo"
    if any(w in alg for w in ("rlvr", "grpo", "ppo", "reinforce", "verifiable", "zero rl")):
        return "rlvr"
    if "sft" in alg or "supervised" in alg or "distill" in alg:
        return "sft"
    return None


def step_of(name: str, revision: str | None = None) -> tuple[str, int] | None:
    """(kind, number) from a checkpoint name: ``rlvr@step_200`` → ("step", 200), ``rlvr#2`` → ("ordinal", 2)."""
    for text in (revision or "", name):
        m = _STEP.search(text)
        if m:
            return "step", int(m.group(1))
    m = _ORDINAL.search(name)
    if m:
        return "ordinal", int(m.group(1))
    return None


@dataclass(frozen=True)
class Stage:
    label: str
    role: str | None
    start: int | None
    """Index of the checkpoint before the stage (None for the lineage's first stage)."""
    members: tuple[int, ...]
    names: tuple[str, ...]
    facts: dict = field(default_factory=dict)
    """Facts of the stage's last checkpoint (what the whole stage was trained on)."""
    member_facts: tuple[dict, ...] = ()
    revisions: tuple[str | None, ...] = ()
    steps: tuple[int | None, ...] = ()
    """Optimizer steps recorded by the checkpoints themselves (lab checkpoints), else None."""

    @property
    def end(self) -> int:
        return self.members[-1]

    @property
    def name(self) -> str:
        return self.names[-1]

    @property
    def is_trajectory(self) -> bool:
        return len(self.members) > 1


def stages_of(lineage: dict) -> list[Stage]:
    """Group the lineage's checkpoints into stages (neighbours sharing a label)."""
    cps = (lineage or {}).get("checkpoints") or []
    out: list[Stage] = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1].get("label") == cps[i].get("label"):
            j += 1
        members = tuple(range(i, j + 1))
        facts = dict(cps[j].get("facts") or {})
        label = cps[i].get("label") or cps[i].get("name") or f"checkpoint {i}"
        out.append(Stage(label=label, role=role_of(label, facts), start=i - 1 if i > 0 else None, members=members,
                         names=tuple(cps[k].get("name") or cps[k].get("label") or str(k) for k in members),
                         facts=facts, member_facts=tuple(dict(cps[k].get("facts") or {}) for k in members),
                         revisions=tuple(cps[k].get("revision") for k in members),
                         steps=tuple(cps[k].get("step") for k in members)))
        i = j + 1
    return out


def first_role(stages: list[Stage], role: str, after: int = -1) -> Stage | None:
    return next((s for s in stages if s.role == role and s.end > after), None)


def comparison_pair(stages: list[Stage], trained_only: bool = True) -> tuple[Stage, Stage, bool] | None:
    """The two stages the verdicts compare: (SFT, RLVR, True) when the lineage has both in that order,
    else (first trained stage, last stage, False); None with fewer than two trained stages.
    ``trained_only=False`` lets the lineage's first checkpoint count (behaviour compares models, not updates)."""
    trained = [s for s in stages if s.start is not None or not trained_only]
    sft = first_role(trained, "sft")
    if sft is not None:
        rl = first_role(trained, "rlvr", after=sft.end)
        if rl is not None:
            return sft, rl, True
    if len(trained) >= 2:
        return trained[0], trained[-1], False
    return None


class Transitions:
    """Lookup over a scan's stored transitions and their aggregate rows (:class:`WeightSummary`), indexed once."""

    def __init__(self, summary: WeightSummary | dict | None):
        self.summary = WeightSummary.coerce(summary) or WeightSummary({}, {}, [], {})
        self.by_ab: dict[tuple[int, int], str] = {}
        for t in self.summary.transition_refs():
            self.by_ab.setdefault((t.a, t.b), t.name)
        self.names = {n: ab for ab, n in self.by_ab.items()}
        self._rows: dict[tuple[str, str], list[AggregateRow]] = {}

    def name(self, a: int, b: int) -> str | None:
        return self.by_ab.get((a, b))

    def span(self, a: int, b: int) -> str | None:
        """The stored transition a → b, else None: a part of the span never stands in for all of it."""
        return self.name(a, b)

    def distance(self, a: int, b: int) -> tuple[float | None, str]:
        """‖W_b − W_a‖_F / ‖W_a‖_F and how it was obtained: "stored" (the transition a → b), "derived" (two steps
        and their stored cosine), else (None, "")."""
        t = self.name(a, b)
        if t is not None:
            return self.value("model", t, "rel_change"), "stored"
        if b == a + 2:
            t1, t2 = self.name(a, a + 1), self.name(a + 1, a + 2)
            d1, d2 = self.value("model", t1, "delta_norm"), self.value("model", t2, "delta_norm")
            base = self.value("model", t1, "norm_a")
            cos = self.delta_cosine(t1, t2) if t1 and t2 else None
            if d1 is not None and d2 is not None and cos is not None and base:
                return (d1 * d1 + d2 * d2 + 2 * cos * d1 * d2) ** 0.5 / base, "derived"
        return None, ""

    def path_length(self, a: int, b: int) -> float | None:
        """Σ‖ΔW‖_F of the consecutive steps a → b ÷ ‖W_a‖_F: an upper bound of :meth:`distance`."""
        base = self.value("model", self.name(a, a + 1), "norm_a")
        steps = [self.value("model", self.name(i, i + 1), "delta_norm") for i in range(a, b)]
        if not base or any(d is None for d in steps):
            return None
        return sum(steps) / base

    def stage_transition(self, stage: Stage) -> str | None:
        """The stored transition of the stage's span (start → last checkpoint), else None."""
        if stage.start is None:
            return None
        return self.span(stage.start, stage.end)

    def rows(self, scope: str, transition: str | None) -> list[AggregateRow]:
        """Rows of one transition; none for no transition."""
        if transition is None:
            return []
        if (scope, transition) not in self._rows:
            self._rows[(scope, transition)] = self.summary.rows(scope, transition)
        return self._rows[(scope, transition)]

    def row(self, scope: str, transition: str | None, key: Sequence = ()) -> AggregateRow | None:
        return next((r for r in self.rows(scope, transition) if r.key == tuple(key or ())), None)

    def value(self, scope: str, transition: str | None, metric: str, key: Sequence = ()) -> float | None:
        r = self.row(scope, transition, key)
        return None if r is None else r.value(metric)

    def delta_cosine(self, t1: str, t2: str, scope: str = "delta_cosine_model") -> float | None:
        return next((p.delta_cosine for p in self.summary.cosines(scope) if not p.key and {p.t1, p.t2} == {t1, t2}),
                    None)
