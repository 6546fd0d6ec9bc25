"""The overall decision: which branch of the user's plan the per-question verdicts put this lineage in.

The plan (docs/DECISION.md) ends in one of three branches —
clear differences → the hypothesis is validated, spend the training budget on your own models;
minimal differences → save the budget; unexpected patterns → a new research question — reached
through quick behavioural test → interesting differences? → deep weight analysis → layer-specific
analysis → hypothesis validated? ptlens states which branch applies by :data:`RULE`, derived only
from the verdicts (:mod:`ptlens.report.verdicts`) and the facts that say how sure they are (the
power of the behaviour design, :mod:`ptlens.report.calibration`), or "not enough evidence" with
what to run to get there, and names the workflow's next step.

:func:`decision_inputs` pulls the facts the rule needs out of the stored results (the store's
records in, a :class:`DecisionInputs` record out); :func:`decide` is the rule. Both are pure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

from ptlens.report.verdicts import (AS_HYPOTHESISED, CLEAR, CLEAR_UNDIRECTED, MINIMAL, NO_CLEAR, QUESTION_KEYS,
                                    REVERSED, Criteria, Verdict, behaviour_pair, limit_for,
                                    n_problems)
from ptlens.results.rows import largest
from ptlens.results.store import BehaviorResults, WeightSummary

SCHEMA = 1
"""Version of the ``decision`` record in verdicts.json; bump it when a field changes meaning."""

SPEND, SAVE, INVESTIGATE, NOT_ENOUGH = "spend", "save", "investigate", "not enough evidence"
BRANCHES = (SPEND, SAVE, INVESTIGATE, NOT_ENOUGH)
HEADLINES = {
    SPEND: "Clear differences: your hypothesis is validated — spend the training budget on your own models",
    SAVE: "Minimal differences: save your compute budget — focus on other research directions",
    INVESTIGATE: "Unexpected patterns: a new research opportunity — investigate before training",
    NOT_ENOUGH: "Not enough evidence for a decision yet",
}
"""Each branch in the plan's words (docs/DECISION.md)."""

TARGET_POWER = 0.80
"""The power a behaviour run must have, for the reference effect, before "minimal" reads as "save"."""
REFERENCE_EFFECT = 0.10
"""The accuracy gain (absolute) whose power the methods state, and that "save" must have been able to see."""
REACH = 0.05
""""Save" needs problems within the compared models' reach: one of them above this accuracy and one below 1 − it.
At the floor (both ≤ 5%) or the ceiling (both ≥ 95%) "no difference" says the problems are too hard or too easy
for the lineage, not that the stages behave alike."""
SMALL_LINEAGE = 1_000_000_000
"""Below this many parameters a lineage's weight numbers are not taken to speak for 8B-scale models."""

RULE = (
    "Derived only from the per-question verdicts, following the plan's workflow (behaviour first): "
    "(1) any check whose hypothesised direction came out clearly reversed (a question reads unexpected) → "
    "investigate; (2) else the behaviour question reads clear difference → spend; (3) else the behaviour question "
    f"reads minimal, its accuracy check was tested, the run had ≥ {TARGET_POWER:.0%} power for an accuracy gain "
    f"of +{REFERENCE_EFFECT:g} and the problems were within the models' reach (one of the two above {REACH:.0%} "
    f"accuracy, one below {1 - REACH:.0%}) → save; (4) else not enough evidence (behaviour not measured, too few "
    "problems or checks, too little power, or problems all too hard or all too easy), with what to run. Weight verdicts alone never spend or save the budget: the "
    "workflow's first question is whether the models behave differently.")


@dataclass(frozen=True)
class Carrier:
    """A check the decision rests on."""

    question: str
    check: str
    outcome: str
    sampled: bool
    """True for behaviour checks (a test over problems, with a family-wise error); False for exact weight numbers."""
    p_adjusted: float | None = None
    hypothesis: str | None = None
    """Id of the hypothesis (verdicts.HYPOTHESES) whose direction the check tests."""


@dataclass(frozen=True)
class DecisionInputs:
    """The facts besides the verdicts that the rule and its next step use; every field may be empty."""

    pair: tuple[str, str] | None = None
    """The two models the behaviour verdict compares."""
    n_problems: int | None = None
    n_samples: int | None = None
    accuracy_difference: float | None = None
    """Observed accuracy B − A of the compared pair (headline problems)."""
    accuracies: tuple[float, float] | None = None
    """Observed accuracy of A and of B (headline problems)."""
    power: float | None = None
    """Power of the behaviour design for an accuracy gain of :data:`REFERENCE_EFFECT` at this run's size."""
    problems_for_power: int | None = None
    """Problems the design needs for :data:`TARGET_POWER` at the observed effect (or the reference one)."""
    effect_for_power: float | None = None
    limit_for_power: int | None = None
    """The ``--limit`` that yields ``problems_for_power`` headline problems (held-out problems are reported apart)."""
    limit_for_verdict: int | None = None
    """The ``--limit`` that yields the fewest problems a behaviour verdict accepts."""
    held_out: int = 0
    """Problems loaded but left out of the headline (reported apart)."""
    top_problems: list[tuple[str, float, float]] = field(default_factory=list)
    """(problem id, accuracy of A, accuracy of B): where the compared models differ most."""
    weight_layers: list[str] = field(default_factory=list)
    """The layers and module kinds whose relative change is largest in the later stage's update."""
    mechanism: list[str] = field(default_factory=list)
    """Per transition: the parts the transplants say carry the change (or the best part)."""
    has_weights: bool = False
    has_behaviour: bool = False
    has_mechanism: bool = False
    parameters: int | None = None
    """Parameters of the lineage's models (from the weight scan)."""


@dataclass(frozen=True)
class Decision:
    branch: str
    headline: str
    rule: str
    reason: str
    carried_by: list[Carrier]
    sureness: str
    """How sure: the family-wise error of the sampled checks it rests on, or the miss rate of a "save"."""
    family_wise_error: float | None
    next_step: str
    """The workflow step that comes next (the plan's words)."""
    next_actions: list[str]
    scale_note: str | None
    verdicts: dict[str, str]
    """Question key → verdict label: the inputs of the rule."""
    inputs: DecisionInputs
    schema: int = SCHEMA

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- facts from stored results


def _accuracy(results: BehaviorResults, name: str) -> float | None:
    stats = results.models.get(name)
    return stats.value("accuracy") if stats else None


def _top_problems(results: BehaviorResults, a: str, b: str, n: int = 3) -> list[tuple[str, float, float]]:
    pa = {r.id: r for r in results.per_problem(a) if r.n}
    out = []
    for r in results.per_problem(b):
        q = pa.get(r.id)
        if q is None or not r.n:
            continue
        out.append((r.id, q.accuracy, r.accuracy))
    out.sort(key=lambda x: (-abs(x[2] - x[1]), x[0]))
    return [x for x in out[:n] if x[2] != x[1]]


def _weight_facts(summary: WeightSummary) -> tuple[list[str], int | None]:
    from ptlens.report.stages import Transitions, comparison_pair, stages_of

    tr = Transitions(summary)
    pair = comparison_pair(stages_of(summary.lineage))
    t = tr.stage_transition(pair[1]) if pair else None
    if t is None:
        names = [x.name for x in summary.transition_refs()]
        t = names[-1] if names else None
    row = tr.row("model", t) if t else None
    params = row.finite("entries") if row else None
    if t is None:
        return [], None
    layers = largest(tr.rows("layer", t), "rel_change", 3)
    kinds = largest(tr.rows("kind", t), "rel_change", 2)
    out = []
    if layers:
        out.append(f"{t}, layers by relative change: " + ", ".join(f"{r.key[0]} ({r.values.get('rel_change') or 0:.3g})"
                                                                  for r in layers))
    if kinds:
        out.append(f"{t}, module kinds: " + ", ".join(f"{r.key[0]} ({r.values.get('rel_change') or 0:.3g})" for r in kinds))
    return out, int(params) if params else None


def _mechanism_facts(mechanism: dict | None, span: Sequence[str] | None) -> list[str]:
    out = []
    for t in (mechanism or {}).get("transitions") or []:
        name = str(t.get("transition") or "")
        ends = [x.strip() for x in name.replace("->", "→").split("→")]
        if span and not all(e in span for e in ends):
            continue
        if t.get("carriers"):
            out.append(f"{name}: carried by {', '.join(t['carriers'])}")
        elif t.get("best"):
            out.append(f"{name}: no single part carries it; the largest share is in "
                       + " and ".join(f"{p} ({k})" for k, p in t["best"].items()))
    return out


def decision_inputs(summary: WeightSummary | dict | None, results: BehaviorResults | dict | None,
                    mechanism: dict | None = None, criteria: Criteria = Criteria()) -> DecisionInputs:
    """The facts the rule uses, from ``weights/summary.json``, ``model_comparison_results.json`` and the
    mechanism record (each may be None)."""
    from ptlens.report.calibration import design_of, problems_for_power

    summary, results = WeightSummary.coerce(summary), BehaviorResults.coerce(results)
    pair = behaviour_pair(results)
    kw: dict = {"has_weights": bool(summary), "has_behaviour": bool(results), "has_mechanism": bool(mechanism)}
    span = None
    if results and pair:
        a, b = pair[0], pair[1]
        names = results.names
        span = names[names.index(a):names.index(b) + 1] if a in names and b in names else [a, b]
        acc_a, acc_b = _accuracy(results, a), _accuracy(results, b)
        diff = acc_b - acc_a if acc_a is not None and acc_b is not None else None
        d = design_of(results, a, REFERENCE_EFFECT, criteria)
        effect = abs(diff) if diff is not None and abs(diff) > 0 else REFERENCE_EFFECT
        need = problems_for_power(effect, d.n_samples, TARGET_POWER, criteria, d.accuracy_variance) if d else None
        if need is None and d is not None and effect != REFERENCE_EFFECT:  # the observed effect is below the stated size
            effect = REFERENCE_EFFECT
            need = problems_for_power(effect, d.n_samples, TARGET_POWER, criteria, d.accuracy_variance)
        head = results.headline_problems or {}
        held = int(head["of"] - head["n"]) if head.get("excluded_tag") and isinstance(head.get("of"), int) else 0
        kw.update(pair=(a, b), n_problems=n_problems(results, a, b), n_samples=d.n_samples if d else None,
                  accuracy_difference=diff, power=d.power if d else None,
                  accuracies=(acc_a, acc_b) if diff is not None else None, problems_for_power=need,
                  effect_for_power=effect, held_out=held,
                  limit_for_power=limit_for(results, need) if need else None,
                  limit_for_verdict=limit_for(results, criteria.min_problems),
                  top_problems=_top_problems(results, a, b))
    if summary:
        layers, params = _weight_facts(summary)
        kw.update(weight_layers=layers, parameters=params)
    kw["mechanism"] = _mechanism_facts(mechanism, span)
    return DecisionInputs(**kw)


# ---------------------------------------------------------------- the rule


def _carriers(v: Verdict, outcomes: tuple[str, ...], sampled: bool) -> list[Carrier]:
    return [Carrier(v.question, c.name, c.outcome, sampled, c.p_adjusted, c.hypothesis) for c in v.checks
            if c.outcome in outcomes]


def _scale_note(inp: DecisionInputs, weight_part: bool) -> str | None:
    if inp.parameters is None or inp.parameters >= SMALL_LINEAGE:
        return None
    if not weight_part:
        return None
    return (f"The weight part of this decision rests on a lineage of {inp.parameters:,} parameters: what its "
            "updates show about the stages says nothing yet about 8B-scale models (run a preset such as tulu3-8b "
            "for that).")


def _problems_text(inp: DecisionInputs) -> str:
    if not inp.top_problems or not inp.pair:
        return ""
    a, b = inp.pair
    return (f"the problems where {a} and {b} differ most: " +
            "; ".join(f"{pid} ({a} {pa:.0%} → {b} {pb:.0%})" for pid, pa, pb in inp.top_problems))


def _more_problems(inp: DecisionInputs, criteria: Criteria) -> str:
    held = " (the limit also loads held-out problems, which are reported apart and not counted)" if inp.held_out else ""
    if inp.problems_for_power and inp.limit_for_power:
        return (f"run with --limit {inp.limit_for_power}: {inp.problems_for_power} problems × {inp.n_samples} samples "
                f"give ≈ {TARGET_POWER:.0%} power for an accuracy difference of {inp.effect_for_power:.2g}{held}")
    if inp.limit_for_verdict:
        return f"run with --limit {inp.limit_for_verdict} or more (a behaviour verdict needs ≥ {criteria.min_problems} problems){held}"
    return "run ptlens behavior (or ptlens run) with more problems"


def decide(verdicts: Sequence[Verdict], inputs: DecisionInputs = DecisionInputs(),
           criteria: Criteria = Criteria()) -> Decision:
    """The branch of the plan the verdicts put this lineage in, by :data:`RULE`."""
    by = {QUESTION_KEYS.get(v.question, v.question): v for v in verdicts}
    labels = {k: v.label for k, v in by.items()}
    beh, dyn = by.get("behaviour"), by.get("dynamics")
    reversed_ = [c for v in verdicts for c in _carriers(v, (REVERSED,), v is beh)]
    beh_clear = _carriers(beh, (AS_HYPOTHESISED, CLEAR_UNDIRECTED), True) if beh else []
    dyn_clear = _carriers(dyn, (AS_HYPOTHESISED, CLEAR_UNDIRECTED), False) if dyn else []
    alpha = criteria.alpha
    tested_beh = [c for c in (beh.checks if beh else []) if c.p_adjusted is not None]
    acc_tested = any(c.name.startswith("Accuracy") and c.p_adjusted is not None for c in (beh.checks if beh else []))
    fwer_text = (f"family-wise error ≤ {alpha:g}: Holm's correction over the {len(tested_beh)} tested behaviour checks "
                 "keeps the chance that any of them is a false alarm, when the two models do not differ, at most that")
    exact_text = ("weight checks are exact numbers of these checkpoints (no sampling error); they describe this "
                  "lineage, not another run of the same recipe")
    actions: list[str] = []
    next_step = ""
    if reversed_:
        branch, carried = INVESTIGATE, reversed_
        hyps = "; ".join(sorted({f"{c.hypothesis}: {c.check}" if c.hypothesis else c.check for c in reversed_}))
        reason = f"a hypothesised direction came out clearly reversed ({hyps})"
        sampled = any(c.sampled for c in carried)
        fwe = alpha if sampled else None
        sureness = "; ".join(([fwer_text] if sampled else []) + ([exact_text] if not all(c.sampled for c in carried) else []))
        next_step = "Investigate specific layer behaviours; design targeted experiments"
    elif beh is not None and beh.label == CLEAR:
        branch, carried = SPEND, beh_clear + dyn_clear
        hyps = sorted({f"{c.hypothesis}: {c.check}" for c in beh_clear if c.outcome == AS_HYPOTHESISED})
        reason = (f"the behaviour question reads clear difference ({len(beh_clear)} of {len(beh.checks)} checks clear"
                  + (f"; as hypothesised: {', '.join(hyps)}" if hyps else "; none of them a hypothesised direction")
                  + ")" + (f", and the weights differ too ({len(dyn_clear)} weight checks clear)" if dyn_clear else ""))
        fwe = alpha
        sureness = fwer_text + ("; " + exact_text if dyn_clear else "")
    elif (beh is not None and beh.label == MINIMAL and acc_tested and (inputs.power or 0) >= TARGET_POWER
          and not _out_of_reach(inputs)):
        branch = SAVE
        carried = _carriers(beh, (NO_CLEAR,), True)
        reason = (f"no behaviour check is clear ({len(carried)} tested), and the run could see an accuracy gain of "
                  f"+{REFERENCE_EFFECT:g} with ≈ {inputs.power:.0%} power"
                  + (f"; the weights do differ ({len(dyn_clear)} weight checks clear), which alone does not spend the "
                     "budget" if dyn_clear else ""))
        fwe = None
        sureness = (f"a true accuracy gain of +{REFERENCE_EFFECT:g} would be missed with probability ≈ "
                    f"{1 - inputs.power:.0%} (1 − power; the design in the methods)")
        next_step = "Try different models or tasks; explore other directions"
        actions.append("try a different model size or dataset before training: e.g. ptlens run --preset tulu3-8b, or "
                       "--problems gsm8k / math500")
    else:
        branch, carried, fwe = NOT_ENOUGH, [], None
        if beh is None or not inputs.has_behaviour:
            reason = "the workflow starts with the behavioural test, and no behaviour results are in this folder"
            actions.append("run ptlens behavior (or ptlens run) on this lineage with this output folder")
        elif beh.label == MINIMAL and not acc_tested:
            reason = "the accuracy check was not tested (no paired test stored), so 'minimal' cannot read as 'save'"
            actions.append("rerun ptlens behavior, or rebuild the report beside behavior/samples.jsonl")
        elif beh.label == MINIMAL and _out_of_reach(inputs):
            where = _out_of_reach(inputs)
            reason = (f"no behaviour check is clear, but both models sit at the {where} (accuracy "
                      f"{inputs.accuracies[0]:.2f} and {inputs.accuracies[1]:.2f}): these problems cannot show whether "
                      "the stages behave differently, only that they are " + ("too hard" if where == "floor" else
                                                                             "too easy") + " for this lineage")
            actions.append("rerun on problems within reach: " + ("easier ones (--problems builtin:1, or a stronger "
                           "lineage)" if where == "floor" else "harder ones (--problems math500, or builtin's higher "
                           "levels)"))
        elif beh.label == MINIMAL:
            reason = (f"no behaviour check is clear, but the run had only ≈ {(inputs.power or 0):.0%} power for an "
                      f"accuracy gain of +{REFERENCE_EFFECT:g} (a decision to save needs ≥ {TARGET_POWER:.0%})")
            actions.append(_more_problems(inputs, criteria))
        else:
            summary = beh.summary[len("not measured: "):] if beh.summary.startswith("not measured: ") else beh.summary
            reason = f"the behaviour question is {beh.label}: {summary}"
            actions.append(_more_problems(inputs, criteria))
        if dyn_clear:
            reason += f"; the weights differ ({len(dyn_clear)} weight checks clear), which alone decides nothing"
        sureness = ("no branch is claimed" + (f"; at this size a +{REFERENCE_EFFECT:g} accuracy gain is found with "
                                               f"≈ {inputs.power:.0%} power" if inputs.power is not None else ""))
        next_step = "Quick behavioural test"
    if branch in (SPEND, INVESTIGATE):
        if not inputs.has_weights:
            next_step = next_step or "Deep weight analysis"
            actions.append("deep weight analysis: run ptlens weights (or ptlens run) on this lineage")
        if not inputs.has_mechanism:
            next_step = next_step or "Layer-specific analysis"
            actions.append("layer-specific analysis: run ptlens mechanism (or ptlens run) on this lineage")
        next_step = next_step or "Design custom training (use the saved compute budget on a targeted experiment)"
        if inputs.mechanism:
            actions.append("target the parts the transplants say carry the change — " + "; ".join(inputs.mechanism))
        if inputs.weight_layers:
            actions.append("the layers and modules that move most — " + "; ".join(inputs.weight_layers))
        if _problems_text(inputs):
            actions.append(_problems_text(inputs))
    weight_part = any(not c.sampled for c in carried) or bool(dyn_clear) or (
        branch in (SPEND, INVESTIGATE) and bool(inputs.weight_layers))
    return Decision(branch, HEADLINES[branch], RULE, reason, carried, sureness, fwe, next_step, actions,
                    _scale_note(inputs, weight_part), labels, inputs)


def _out_of_reach(inputs: DecisionInputs) -> str | None:
    """"floor" when both compared models score ≤ :data:`REACH`, "ceiling" when both ≥ 1 − it, else None."""
    if not inputs.accuracies or None in inputs.accuracies:
        return None
    if max(inputs.accuracies) <= REACH:
        return "floor"
    if min(inputs.accuracies) >= 1 - REACH:
        return "ceiling"
    return None


def carrier_text(c: Carrier) -> str:
    p = f", Holm-adjusted p = {c.p_adjusted:.2g}" if c.p_adjusted is not None else ""
    h = f" ({c.hypothesis})" if c.hypothesis else ""
    return f"{c.question}: {c.check}{h} — {c.outcome}{p}" + ("" if c.sampled else " (exact weight numbers)")


def decision_rows(d: Decision) -> list[tuple[str, str | list[str]]]:
    """The decision as (field, text or list of texts), in the order the report, the markdown and the console show it."""
    rows: list[tuple[str, str | list[str]]] = [("why", d.reason[:1].upper() + d.reason[1:] + ".")]
    if d.carried_by:
        rows.append(("carried by", [carrier_text(c) for c in d.carried_by]))
    rows.append(("how sure", d.sureness[:1].upper() + d.sureness[1:] + "."))
    rows.append(("next step", d.next_step + "." if d.next_step else "–"))
    if d.next_actions:
        rows.append(("to do", [a[:1].upper() + a[1:] for a in d.next_actions]))
    if d.scale_note:
        rows.append(("scale", d.scale_note))
    rows.append(("rule", d.rule))
    return rows
