"""Question 3, sample efficiency: weight change per training item of each stage."""

from __future__ import annotations

from dataclasses import dataclass

from ptlens.report.stages import ITEM_FIELDS, Stage, Transitions, comparison_pair, stages_of
from ptlens.report.verdicts.checks import ratio_check
from ptlens.report.verdicts.criteria import DESCRIBED, QUESTIONS, Check, Criteria, Evidence, Verdict, combine, no_weights
from ptlens.results import files as FILES
from ptlens.results.store import WeightSummary


@dataclass(frozen=True)
class EfficiencyRow:
    stage: str
    role: str | None
    transition: str | None
    """The stored transition from the stage start to its end, or how the change was obtained."""
    rel_change: float | None
    """‖W_end − W_start‖_F / ‖W_start‖_F; None when neither stored nor derivable (see ``upper_bound``)."""
    upper_bound: float | None
    """Path length Σ‖ΔW‖ / ‖W_start‖ over the stage's steps, when ``rel_change`` is unknown."""
    item_field: str | None
    items: int | None
    epochs: float | None
    learning_rate: float | None

    @property
    def per_item(self) -> float | None:
        return self.rel_change / self.items if self.rel_change is not None and self.items else None

    @property
    def per_pass(self) -> float | None:
        """Per item processed (items × epochs), when the epochs are known."""
        return self.rel_change / (self.items * self.epochs) if self.per_item is not None and self.epochs else None


def _items(stage: Stage) -> tuple[str | None, int | None]:
    f = stage.facts
    preferred = ITEM_FIELDS.get(stage.role or "")
    for key in ([preferred] if preferred else []) + ["examples", "pairs", "prompts"]:
        v = f.get(key)
        if isinstance(v, int) and v > 0:
            return key, v
    return None, None


def efficiency_rows(summary: WeightSummary | dict | None) -> list[EfficiencyRow]:
    summary = WeightSummary.coerce(summary)
    if not summary:
        return []
    tr = Transitions(summary)
    rows = []
    for s in stages_of(summary.lineage):
        if s.start is None:
            continue
        dist, how = tr.distance(s.start, s.end)
        names = [c.get("name") for c in summary.checkpoints]
        t = tr.name(s.start, s.end) if how == "stored" else (
            f"{names[s.start]}→{names[s.end]} (derived from steps and their cosine)" if how else None)
        field_, n = _items(s)
        ep = s.facts.get("epochs")
        lr = s.facts.get("learning_rate")
        rows.append(EfficiencyRow(s.label, s.role, t, dist, None if dist is not None else tr.path_length(s.start, s.end),
                                  field_, n, float(ep) if isinstance(ep, (int, float)) else None,
                                  float(lr) if isinstance(lr, (int, float)) else None))
    return rows


def sample_efficiency(summary: WeightSummary | dict | None, criteria: Criteria = Criteria()) -> Verdict:
    q = QUESTIONS[2]
    crit = ("Weight change per training item (relative change of the whole stage ÷ its distinct training examples, "
            "pairs or prompts, from the stage facts). Descriptive when the stages count different kinds of items "
            f"(an SFT example, a preference pair and an RL prompt are not one unit); between items of one kind clear "
            f"at ≥ {criteria.efficiency_factor:g}× either way. No direction is hypothesised. Caveats: the stages used "
            "different data, objectives and learning rates, and weight change is not learning; a rate, not a "
            "controlled comparison.")
    summary = WeightSummary.coerce(summary)
    if not summary:
        return no_weights(q, crit)
    stages = stages_of(summary.lineage)
    pair = comparison_pair(stages)
    rows = {r.stage: r for r in efficiency_rows(summary)}
    if pair is None:
        return combine(q, [], crit, None, None, "", "the lineage has a single trained stage; nothing to compare")
    sa, sb, _ = pair
    ra, rb = rows.get(sa.label), rows.get(sb.label)
    unknown = [s.label for s, r in ((sa, ra), (sb, rb)) if r and r.items and r.rel_change is None]
    if unknown:
        return combine(q, [], crit, None, None, "",
                        f"the whole-stage change of {', '.join(unknown)} is not stored (a trajectory stage scanned by an "
                        "older ptlens: only the path length, an upper bound, is known; rescan to store stage spans)")
    if not ra or not rb or ra.per_item is None or rb.per_item is None:
        missing = [s.label for s, r in ((sa, ra), (sb, rb)) if not r or r.items is None]
        return combine(q, [], crit, None, None, "",
                        f"no training-item counts in the stage facts of {', '.join(missing) or 'the compared stages'} "
                        "(give a preset with facts, or lab checkpoints)")
    name = f"Relative change per training item ({ra.item_field} vs {rb.item_field})"
    ev = [Evidence(f"{ra.item_field} [{sa.label}]", float(ra.items)), Evidence(f"{rb.item_field} [{sb.label}]", float(rb.items))]
    if ra.item_field == rb.item_field:
        check = ratio_check(name, "rel_change per item", sa.label, ra.per_item, sb.label, rb.per_item,
                            criteria.efficiency_factor)
        check = Check(check.name, check.outcome, ev + check.evidence, None, check.rule)
    else:
        ev += [Evidence(f"rel_change per item [{sa.label}]", ra.per_item), Evidence(f"rel_change per item [{sb.label}]", rb.per_item),
               Evidence(f"ratio {sb.label}/{sa.label}", rb.per_item / ra.per_item if ra.per_item else None)]
        check = Check(name, DESCRIBED, ev, None,
                      f"descriptive: {ra.item_field} and {rb.item_field} are different kinds of items, so their rates "
                      "are not compared")
    return combine(q, [check], crit, FILES.REPORT_FIGURES["sample_efficiency"], "#tbl-efficiency", f"{sa.label} vs {sb.label}")
