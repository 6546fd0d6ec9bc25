"""Question 1, learning dynamics: where and how each stage changes the weights, against its null."""

from __future__ import annotations

import math

from ptlens.report.stages import Stage, Transitions, comparison_pair, stages_of
from ptlens.report.verdicts.checks import comparison_text, finite_number, ratio_check
from ptlens.report.verdicts.criteria import (DESCRIBED, NO_CHANGE, NO_CLEAR, NOT_MEASURED, QUESTIONS, Check, Criteria,
                                             Evidence, Verdict, combine, no_weights)
from ptlens.results import files as FILES
from ptlens.results.rows import AggregateRow
from ptlens.results.store import WeightSummary


def _sumsq(rows: list[AggregateRow], field_: str) -> float:
    return sum(float(r.values.get(field_) or 0.0) ** 2 for r in rows)


def output_focus(tr: Transitions, transition: str | None, fraction: float = 0.25) -> float | None:
    """rel_change of the output layers (last ``fraction`` of layers + LM head) ÷ rel_change of everything else."""
    if transition is None:
        return None
    layers = tr.rows("layer", transition)
    model = tr.row("model", transition)
    if not layers or model is None:
        return None
    ids = sorted({r.key[0] for r in layers})
    top = set(ids[len(ids) - max(1, math.ceil(fraction * len(ids))):])
    out = [r for r in layers if r.key[0] in top] + [r for r in tr.rows("group", transition) if r.key == ("head",)]
    d_out, a_out = _sumsq(out, "delta_norm"), _sumsq(out, "norm_a")
    d_all, a_all = _sumsq([model], "delta_norm"), _sumsq([model], "norm_a")
    d_rest, a_rest = d_all - d_out, a_all - a_out
    if a_out <= 0 or a_rest <= 0 or d_rest <= 0:
        return None
    return math.sqrt(d_out / a_out) / math.sqrt(d_rest / a_rest)


def attention_mlp_ratio(tr: Transitions, transition: str | None) -> float | None:
    att = tr.value("group", transition, "rel_change", ["attention"])
    mlp = tr.value("group", transition, "rel_change", ["mlp"])
    return att / mlp if att is not None and mlp else None


def null_of(row: AggregateRow | None, metric: str) -> float | None:
    """The stored null of ``metric`` in an aggregate row (:meth:`AggregateRow.null`), None without a row."""
    return None if row is None else row.null(metric)


def null_pairs(row: AggregateRow | None) -> dict[str, tuple[float, float]]:
    """{metric: (observed, null)} for every metric of ``row`` with a stored null."""
    return {} if row is None else row.null_pairs()


def beyond_rounding(tr: Transitions, transition: str | None, margin: float = 0.10) -> bool | None:
    """False when the transition changed nothing beyond rounding: no stored value differs (changed_exact = 0), or
    every metric with a stored null is within ``margin`` (relative) of it; True when some metric is beyond;
    None when nothing tells (no null stored)."""
    row = tr.row("model", transition)
    if row is None:
        return None
    if row.finite("changed_exact") == 0.0:
        return False
    pairs = null_pairs(row)
    if not pairs:
        return None
    return any(abs(o - n) > margin * max(abs(n), 1e-12) for o, n in pairs.values())


def null_ratio_check(name: str, metric: str, tr: Transitions, an: str, ta: str, bn: str, tb: str, factor: float,
                     direction: int = 0, hypothesis: str | None = None, values: tuple | None = None) -> Check:
    """Compare two stages on ``metric`` ÷ its null when both nulls are stored (1 = no structure beyond an unstructured
    update of the same size), else on the raw values, saying "no null available"."""
    a, b = values if values else (tr.value("model", ta, metric), tr.value("model", tb, metric))
    na, nb = null_of(tr.row("model", ta), metric), null_of(tr.row("model", tb), metric)
    if na and nb and na > 0 and nb > 0 and a is not None and b is not None:
        c = ratio_check(name, f"{metric} ÷ null", an, a / na, bn, b / nb, factor, direction, hypothesis,
                        "each stage's value divided by its null")
        ev = [Evidence(f"{metric} [{an}]", a), Evidence(f"{metric}_null [{an}]", na),
              Evidence(f"{metric} [{bn}]", b), Evidence(f"{metric}_null [{bn}]", nb)]
        return Check(c.name, c.outcome, ev + c.evidence, c.hypothesis, c.rule)
    return ratio_check(name, metric, an, a, bn, b, factor, direction, hypothesis, "no null available: raw values")


def stage_travel(stage: Stage) -> tuple[float | None, str]:
    """learning rate × optimizer steps of a stage, from its facts and its last checkpoint's recorded step."""
    lr = finite_number(stage.facts.get("learning_rate"))
    steps = stage.steps[-1] if stage.steps and isinstance(stage.steps[-1], int) else None
    if steps is None:
        steps = stage.facts.get("steps") if isinstance(stage.facts.get("steps"), int) else None
    if lr is None or not steps:
        missing = " and ".join(x for x, v in (("learning rate", lr), ("steps", steps)) if not v)
        return None, missing
    return lr * steps, f"{lr:g} × {steps}"


def magnitude_check(tr: Transitions, sa: Stage, ta: str, sb: Stage, tb: str, criteria: Criteria) -> Check:
    """rel_change per unit of optimiser travel (learning rate × steps) when both stages' facts give it; else
    the raw rel_change, descriptive: it follows the step size and never makes a difference clear on its own."""
    ra, rb = tr.value("model", ta, "rel_change"), tr.value("model", tb, "rel_change")
    (xa, wa), (xb, wb) = stage_travel(sa), stage_travel(sb)
    if xa and xb and ra is not None and rb is not None:
        c = ratio_check("Magnitude per unit of optimiser travel: rel_change ÷ (learning rate × steps)",
                        "rel_change/(lr×steps)", sa.label, ra / xa, sb.label, rb / xb, criteria.weight_factor)
        ev = [Evidence(f"rel_change [{sa.label}]", ra), Evidence(f"lr × steps [{sa.label}] = {wa}", xa),
              Evidence(f"rel_change [{sb.label}]", rb), Evidence(f"lr × steps [{sb.label}] = {wb}", xb)]
        return Check(c.name, DESCRIBED, ev + c.evidence, None,
                     "descriptive: no null exists for this ratio, and the peak learning rate stands for stages with "
                     "different schedules and optimiser states, so a threshold on it would have no known false-alarm "
                     "rate; it is shown, not decided on")
    ev = [Evidence(f"rel_change [{sa.label}]", ra), Evidence(f"rel_change [{sb.label}]", rb)]
    if ra is not None and rb is not None and ra > 0:
        ev.append(Evidence(f"ratio {sb.label}/{sa.label}", rb / ra))
    why = "; ".join(f"{s.label}: no {w} in the stage facts" for s, x, w in ((sa, xa, wa), (sb, xb, wb)) if not x)
    return Check("Magnitude: relative change of the whole model", DESCRIBED if ra is not None and rb is not None
                 else NOT_MEASURED, ev, None,
                 f"descriptive: rel_change follows the learning rate and the number of steps ({why})")


def learning_dynamics(summary: WeightSummary | dict | None, criteria: Criteria = Criteria()) -> Verdict:
    q = QUESTIONS[0]
    P = criteria.pattern_factor
    crit = (f"Compare the two stages' whole-stage weight updates (exact, parameter-weighted), each metric divided by its "
            f"null (an unstructured update of the same size) where the scan stored one: clear when a ratio is beyond "
            f"{P:g}× either way (breadth, output-layer focus, attention/MLP balance, stable rank, principal overlap); "
            "unexpected when a hypothesised direction (W1, W2, L1) is clearly reversed. Magnitude, raw or per unit of "
            "learning rate × steps, is shown but descriptive: it has no null.")
    summary = WeightSummary.coerce(summary)
    if not summary:
        return no_weights(q, crit)
    tr = Transitions(summary)
    stages = stages_of(summary.lineage)
    pair = comparison_pair(stages)
    if pair is None:
        return combine(q, [], crit, None, None, "", "the lineage has a single trained stage; nothing to compare")
    sa, sb, hyp = pair
    ta, tb = tr.stage_transition(sa), tr.stage_transition(sb)
    if ta is None or tb is None:
        missing = [f"{s.label} ({s.names[0]}…{s.name})" for s, t in ((sa, ta), (sb, tb)) if t is None]
        return combine(q, [], crit, None, None, "",
                        f"the scan stored no whole-stage transition for {', '.join(missing)} (a trajectory stage scanned "
                        "by an older ptlens: rescan to store stage spans); a part of a stage is not compared with a whole one")
    an, bn = sa.label, sb.label
    d = (lambda s: s) if hyp else (lambda s: 0)
    h = (lambda i: i) if hyp else (lambda i: None)
    checks = [
        magnitude_check(tr, sa, ta, sb, tb, criteria),
        ratio_check("Output-layer focus (rel. change of last layers + head ÷ rest)", "output_focus", an,
                    output_focus(tr, ta, criteria.output_fraction), bn, output_focus(tr, tb, criteria.output_fraction),
                    P, d(-1), h("W1")),
        null_ratio_check("Breadth: share of entries changed (bit-exact)", "changed_exact", tr, an, ta, bn, tb, P,
                         d(+1), h("W2")),
        ratio_check("Attention vs MLP: rel. change of attention ÷ MLP", "attention/mlp", an, attention_mlp_ratio(tr, ta),
                    bn, attention_mlp_ratio(tr, tb), P, d(+1), h("W2")),
    ]
    if tr.value("model", ta, "stable_rank_wmean") is not None:
        checks.append(null_ratio_check("Update complexity: stable rank of ΔW", "stable_rank_wmean", tr, an, ta, bn, tb,
                                       P, d(+1), h("L1")))
    if tr.value("model", ta, "principal_overlap_wmean") is not None:
        checks.append(null_ratio_check("Principal-weight overlap (vs its null, else vs 1 = chance)",
                                       "principal_overlap_wmean", tr, an, ta, bn, tb, P))
    flat = [s.label for s, t in ((sa, ta), (sb, tb)) if beyond_rounding(tr, t, criteria.null_margin) is False]
    note = ""
    if flat:
        note = f"{' and '.join(flat)}: {NO_CHANGE}"
        checks = [c if c.outcome in (NOT_MEASURED, DESCRIBED) else
                  Check(c.name, NO_CLEAR, c.evidence, c.hypothesis, c.rule + f"; not clear: {note}") for c in checks]
    elif not any(null_pairs(tr.row("model", t)) for t in (ta, tb)):
        note = f"no null available ({FILES.WEIGHT_SUMMARY} has no _null fields): raw values compared"
    return combine(q, checks, crit, FILES.OVERVIEW_FIGURE, "#tbl-weights-model",
                    comparison_text(f"{an} ({ta})", f"{bn} ({tb})", hyp), note=note)
