"""Question 2, reasoning behaviour: the paired sign-flip tests of the compared models, Holm-corrected."""

from __future__ import annotations

import math

from ptlens.report.stages import comparison_pair, stages_of
from ptlens.report.verdicts.checks import comparison_text, difference_check
from ptlens.report.verdicts.criteria import BEHAVIOUR_CHECKS, NOT_MEASURED, QUESTIONS, Criteria, Verdict, combine
from ptlens.results import files as FILES
from ptlens.results.rows import Estimate, estimates
from ptlens.results.store import BehaviorResults
from ptlens.stats.multiple import holm


def behaviour_pair(results: BehaviorResults | dict | None) -> tuple[str, str, bool] | None:
    """The two models the reasoning verdict compares: (SFT model, RLVR model, True), else (first, last, False)."""
    results = BehaviorResults.coerce(results)
    names = results.names if results else []
    if len(names) < 2:
        return None
    lineage = results.lineage or {"checkpoints": [{"name": n, "label": n} for n in names]}
    stages = [s for s in stages_of(lineage) if s.name in names]
    pair = comparison_pair(stages, trained_only=False)
    if pair is not None and pair[2]:
        return pair[0].name, pair[1].name, True
    return names[0], names[-1], False


def stored_difference(results: BehaviorResults, a: str, b: str,
                      extra: dict | None = None) -> dict[str, Estimate] | None:
    """Paired differences B − A: ``extra[(a, b)]`` recomputed from the samples when given, else the stored
    consecutive ones."""
    if (a, b) in (extra or {}):
        return estimates(extra[(a, b)])
    return next((c.difference for c in results.consecutive if c.a == a and c.b == b), None)


def has_test(results: BehaviorResults | dict | None, a: str, b: str) -> bool:
    """Whether the stored results carry the paired test (p-values) for B − A."""
    results = BehaviorResults.coerce(results)
    d = stored_difference(results, a, b) if results else None
    return bool(d) and any(e.p is not None for e in d.values())


def n_problems(results: BehaviorResults | dict, *names: str) -> int | None:
    """Problems both models answered (the unit of every behaviour test)."""
    results = BehaviorResults.coerce(results)
    models = results.models
    counts = [models[n].n_problems for n in names if n in models and models[n].n_problems is not None]
    if counts:
        return min(counts)
    return len(results.problems or []) or None


def limit_for(results: BehaviorResults | dict | None, wanted: int) -> int | None:
    """The ``--limit`` that gives ``wanted`` headline problems: held-out problems (reported apart) are loaded in the
    same share as in this run, so the limit grows by it; checked against the run's own problem order where it
    reaches."""
    if wanted is None or wanted < 1:
        return None
    results = BehaviorResults.coerce(results)
    head = (results.headline_problems if results else None) or {}
    n, of = head.get("n"), head.get("of")
    if not head.get("excluded_tag") or not isinstance(n, int) or not isinstance(of, int) or n < 1:
        return wanted
    keep = [head["excluded_tag"] not in (p.get("tags") or ()) for p in results.problems or []]
    # beyond the stored problems, repeat their shortest cycle (builtin levels cycle); without one, their share + 1 cycle
    period = next((q for q in range(1, len(keep) // 2 + 1) if all(keep[i] == keep[i % q] for i in range(len(keep)))),
                  None)
    kept, i = 0, 0
    while kept < wanted:  # the smallest prefix that holds enough headline problems
        if i >= len(keep) and period is None:
            return max(len(keep) + 1, math.ceil(wanted * of / n) + math.ceil(of / n))
        kept += keep[i if i < len(keep) else i % period]
        i += 1
    return i


def too_few_problems(results: BehaviorResults | dict, n: int, criteria: Criteria) -> str:
    """Why the behaviour verdict is not given, what was excluded, and a --limit that gives enough problems."""
    results = BehaviorResults.coerce(results)
    head = (results.headline_problems if results else None) or {}
    loaded = head.get("of") if head.get("excluded_tag") else None
    left = (f" of {loaded} loaded: the {loaded - n} {head['excluded_tag']} problems are reported apart (accuracy by "
            "tag) and not counted" if isinstance(loaded, int) and loaded > n else "")
    return (f"not measured: too few problems ({n}{left}); a verdict needs ≥ {criteria.min_problems}: run with --limit "
            f"{limit_for(results, criteria.min_problems)} or more — the design in the methods gives the power at each size")


def reasoning_behaviour(results: BehaviorResults | dict | None, criteria: Criteria = Criteria(),
                        extra_differences: dict | None = None) -> Verdict:
    q = QUESTIONS[1]
    results = BehaviorResults.coerce(results)
    crit = " ".join(criteria.text()[:2]) + " Unexpected when a hypothesised direction (B1–B3) is clearly reversed."
    pair = behaviour_pair(results)
    if pair is None:
        why = "no behaviour results (model_comparison_results.json) in this folder" if not results else \
            "behaviour was measured for fewer than two models"
        return combine(q, [], crit, None, None, "", why)
    a, b, hyp = pair
    n = n_problems(results, a, b)
    if n is not None and n < criteria.min_problems:
        return combine(q, [], crit, None, None, comparison_text(a, b, hyp), too_few_problems(results, n, criteria))
    ks = results.ks
    kmax = f"pass@{max(ks)}" if ks else None
    diff = stored_difference(results, a, b, extra_differences) or {}
    models = results.models
    ma, mb = models[a].metrics, models[b].metrics
    plan = []
    for name, metric, rel, direction, hid in BEHAVIOUR_CHECKS:
        m = kmax if metric == "pass@K" else metric
        if m is None:
            continue
        if metric == "pass@K":
            name = f"pass@{max(ks)}"
        ok = models[a].value(m) is not None and models[b].value(m) is not None
        p = diff[m].p if ok and m in diff else None
        plan.append((name, m, rel, direction, hid, p))
    adjusted = holm([x[5] for x in plan])
    family = sum(x[5] is not None for x in plan)
    checks = [difference_check(name, m, a, ma.get(m), b, mb.get(m), diff.get(m), criteria, rel,
                               direction if hyp else 0, hid if hyp else None, padj, family)
              for (name, m, rel, direction, hid, _), padj in zip(plan, adjusted)]
    return combine(q, checks, crit, FILES.BEHAVIOR_FIGURES["pass_at_k"], "#tbl-behaviour", comparison_text(a, b, hyp),
                    "no paired test is stored for the compared models" if any(c.outcome == NOT_MEASURED for c in checks)
                    else "")


def pass_at_k_crossings(results: BehaviorResults | dict, a: str, b: str) -> list[int]:
    """The k at which B's pass@k stops being above (or below) A's: the first k of each sign change."""
    results = BehaviorResults.coerce(results)
    ks = results.ks
    ma, mb = results.models[a], results.models[b]
    signs = []
    for k in ks:
        va, vb = ma.value(f"pass@{k}"), mb.value(f"pass@{k}")
        signs.append(None if va is None or vb is None else (vb > va) - (vb < va))
    out, prev = [], None
    for k, s in zip(ks, signs):
        if s:
            if prev is not None and s != prev:
                out.append(k)
            prev = s
    return out
