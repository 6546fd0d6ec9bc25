"""Question 4, transfer: does each stage's update reinforce, undo or stand unrelated to the one before."""

from __future__ import annotations

import math

from ptlens.report.stages import Transitions, stages_of
from ptlens.report.verdicts.criteria import (NOT_MEASURED, QUESTIONS, REINFORCES, STUDY, UNDOES, UNRELATED, Check,
                                             Criteria, Evidence, Verdict, combine, no_weights)
from ptlens.results import files as FILES
from ptlens.results.store import BehaviorResults, WeightSummary


def cosine_chance(n: int | None, z: float = 4.0) -> float | None:
    """|cos| two independent random updates of n parameters exceed with probability ≈ 2Φ(−z): cos ≈ N(0, 1/n)."""
    return z / math.sqrt(n) if n else None


def transfer_check(tr: Transitions, t1: str, t2: str, criteria: Criteria) -> Check:
    """Does the later update reinforce (cos ≥ c), undo (cos ≤ −c) or stand unrelated to the earlier one?"""
    c = criteria.cosine_threshold
    v = tr.delta_cosine(t1, t2)
    row = tr.row("model", t1)
    n = row.finite("entries") if row else None
    chance = cosine_chance(int(n) if n else None, criteria.cosine_chance_z)
    bound = max(c, chance or 0.0)
    rule = (f"reinforces: cos ≥ {c:g}; undoes: cos ≤ −{c:g}; else unrelated"
            + (f"; chance level {criteria.cosine_chance_z:g}/√n = {chance:.2g} (n = {int(n):,} parameters)" if chance else ""))
    ev = [Evidence(f"cos(Δ[{t1}], Δ[{t2}])", v)]
    if chance:
        ev.append(Evidence("chance level (|cos| of independent updates)", chance))
    if v is None:
        return Check(f"Direction: {t2} after {t1}", NOT_MEASURED, ev, None,
                     rule + " (cosine not stored: rescan to store cosines between stage spans)")
    outcome = REINFORCES if v >= bound else UNDOES if v <= -bound else UNRELATED
    return Check(f"Direction: {t2} after {t1} ({outcome})", outcome, ev, None, rule)


def transfer(summary: WeightSummary | dict | None, results: BehaviorResults | dict | None = None,
             criteria: Criteria = Criteria()) -> Verdict:
    q = QUESTIONS[3]
    c = criteria.cosine_threshold
    crit = (f"Between the whole-stage updates of neighbouring stages (and of the first and last stage): cos(ΔW_earlier, "
            f"ΔW_later) over all tensors; the later stage reinforces the earlier one when cos ≥ {c:g}, undoes it when "
            f"cos ≤ −{c:g}, and is unrelated when |cos| < {c:g} or within chance ({criteria.cosine_chance_z:g}/√n for n "
            f"parameters: independent updates have cos ≈ N(0, 1/n)). {STUDY[0].upper() + STUDY[1:]} name no direction "
            "here, so this question is never 'unexpected'; the verdict names the outcome (mixed when pairs differ).")
    summary, results = WeightSummary.coerce(summary), BehaviorResults.coerce(results)
    if not summary:
        return no_weights(q, crit)
    tr = Transitions(summary)
    stages = [s for s in stages_of(summary.lineage) if s.start is not None]
    spans = [(s, tr.stage_transition(s)) for s in stages]
    pairs = [(spans[i], spans[i + 1]) for i in range(len(spans) - 1)]
    if len(spans) >= 3:
        pairs.append((spans[0], spans[-1]))
    checks = []
    for (s1, t1), (s2, t2) in pairs:
        if t1 is None or t2 is None:
            missing = ", ".join(s.label for s, t in ((s1, t1), (s2, t2)) if t is None)
            checks.append(Check(f"Direction: {s2.label} after {s1.label}", NOT_MEASURED, [], None,
                                f"no stored whole-stage transition for {missing} (rescan to store stage spans)"))
            continue
        checks.append(transfer_check(tr, t1, t2, criteria))
    # accumulation: straight-line change from the first checkpoint vs the path through the stages
    cps = summary.checkpoints
    last = len(cps) - 1
    total = tr.value("model", tr.name(0, last), "delta_norm") if last >= 2 else None
    steps = [tr.value("model", tr.name(i, i + 1), "delta_norm") for i in range(last)]
    extra = []
    if total is not None and steps and all(x is not None for x in steps):
        path = sum(steps)
        extra = [Evidence(f"‖ΔW[{tr.name(0, last)}]‖_F", total), Evidence("Σ‖ΔW‖_F over consecutive steps", path),
                 Evidence("straightness = ‖cumulative‖ ÷ Σ‖consecutive‖ (1 = all steps aligned)", total / path)]
    for cmp_ in results.consecutive if results else []:
        ss = cmp_.solved_sets
        if "a_only" in ss and "b_only" in ss:
            extra.append(Evidence(f"problems solved by {cmp_.a} but no longer by {cmp_.b}", float(ss["a_only"])))
            extra.append(Evidence(f"problems newly solved by {cmp_.b}", float(ss["b_only"])))
    v = combine(q, checks, crit, FILES.REPORT_FIGURES["transfer"], "#tbl-transfer", "whole-stage updates of the lineage's stages",
                 "fewer than two stage transitions with a stored Δ cosine")
    if extra and v.label != NOT_MEASURED:
        v = Verdict(v.question, v.label, v.criterion, v.evidence + extra, v.figure, v.table, v.checks, v.comparison,
                    v.summary)
    return v
