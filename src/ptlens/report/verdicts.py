"""Verdicts for the plan's key questions, computed from stored results by stated criteria.

Pure functions: they take the dicts of ``weights/summary.json`` and
``model_comparison_results.json`` (either may be None) and return :class:`Verdict` objects.
Nothing here reads a file or draws a figure.

Each question is answered by *checks*. A check compares the two stages the plan is about (SFT
and RLVR; without them, the first and the last trained stage) on one metric and has an
outcome:

- behaviour: *clear* when the 95% paired bootstrap interval of the difference excludes 0 and
  the difference is at least a stated size (when no paired interval is stored: when the two
  models' own 95% intervals do not overlap, which is stricter);
- weights (deterministic numbers, no sampling interval): *clear* when the ratio of the two
  stages' values is beyond a stated factor, either way.

A clear check whose direction the plan hypothesised comes out *as hypothesised* or
*reversed*; one without a hypothesis is just *clear difference*. The question's verdict is
**unexpected** when any check reversed, else **clear difference** when any check is clear,
else **minimal** when at least one check was measured, else **not measured**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from ptlens.report.stages import ITEM_FIELDS, Stage, Transitions, comparison_pair, stages_of

# verdict labels
CLEAR, MINIMAL, UNEXPECTED, NOT_MEASURED = "clear difference", "minimal", "unexpected", "not measured"
LABELS = (CLEAR, MINIMAL, UNEXPECTED, NOT_MEASURED)
# check outcomes
AS_HYPOTHESISED, REVERSED, CLEAR_UNDIRECTED, NO_CLEAR = "as hypothesised", "reversed", "clear difference", "no clear difference"

QUESTIONS = ("Learning dynamics", "Reasoning behaviour", "Sample efficiency", "Transfer")


@dataclass(frozen=True)
class Hypothesis:
    """A direction the plan (seed.md, "Expected Results") names; a hypothesis to test, not a finding."""

    id: str
    text: str
    """The plan's own words."""
    test: str
    """How ptlens operationalises it."""


HYPOTHESES = {
    "B1": Hypothesis("B1", "SFT responses: more consistent … RLVR responses: more varied",
                     "RLVR gives more distinct final answers per problem and agrees less with its own modal answer than SFT"),
    "B2": Hypothesis("B2", "SFT responses: … shorter, direct; RLVR responses: … potentially longer",
                     "RLVR responses are longer (mean tokens) than SFT responses"),
    "B3": Hypothesis("B3", "RLVR: more exploratory, potentially novel solution paths",
                     "RLVR's samples of one problem are more diverse (distinct-4) and its token entropy is higher"),
    "W1": Hypothesis("W1", "SFT changes: focused on output layers",
                     "SFT's update is more concentrated in the output layers (last quarter of layers + LM head) than RLVR's"),
    "W2": Hypothesis("W2", "RLVR changes: broader distribution, attention mechanisms affected",
                     "RLVR changes a larger share of entries than SFT, and its attention-to-MLP change ratio is higher"),
    "L1": Hypothesis("L1", "SFT: smooth parameter updates in specific directions; RLVR: more complex update patterns",
                     "RLVR's ΔW spreads over more directions (higher stable rank) than SFT's"),
}


@dataclass(frozen=True)
class Criteria:
    """The thresholds of every check; printed in the report's methods section."""

    level: float = 0.95
    """Bootstrap interval level (set by the behaviour run; stated here for the text)."""
    share_effect: float = 0.05
    """Minimum |difference| for metrics that are shares or probabilities (accuracy, pass@k, confidence, distinct-n, ECE)."""
    relative_effect: float = 0.10
    """Minimum |difference| ÷ the first model's value for metrics with units (tokens, nats, answers per problem)."""
    weight_factor: float = 2.0
    """Magnitudes and shares of weight change: clear when the ratio is ≥ this or ≤ its inverse."""
    pattern_factor: float = 1.5
    """Ratios describing where or how a stage changes the weights (focus, attention/MLP balance, stable rank)."""
    efficiency_factor: float = 2.0
    """Weight change per training item: clear when the ratio between stages is ≥ this or ≤ its inverse."""
    cosine_threshold: float = 0.10
    """|cos(ΔW_1, ΔW_2)| at or above this: a later stage measurably reinforces (> 0) or undoes (< 0) an earlier one."""
    output_fraction: float = 0.25
    """The output layers of hypothesis W1: this last share of the layers (at least one), plus the LM head."""

    def text(self) -> list[str]:
        return [
            f"Behaviour: clear when the {self.level:.0%} paired bootstrap interval of the difference (over problems) "
            f"excludes 0 and |difference| ≥ {self.share_effect:g} for shares (accuracy, pass@k, answer confidence, "
            f"distinct-n, ECE) or ≥ {self.relative_effect:.0%} of the first model's value for metrics with units "
            "(length in tokens, token entropy in nats, distinct answers per problem). Without a stored paired "
            f"interval: when the two models' own {self.level:.0%} intervals do not overlap (stricter).",
            f"Weights: values are exact (no sampling), so a difference is clear when the ratio of the two stages' "
            f"values is ≥ {self.weight_factor:g}× or ≤ 1/{self.weight_factor:g} for magnitudes and changed shares, "
            f"≥ {self.pattern_factor:g}× or ≤ 1/{self.pattern_factor:g} for ratios describing where and how the "
            f"weights change (output-layer focus, attention/MLP balance, stable rank).",
            f"Sample efficiency: clear when weight change per training item differs by ≥ {self.efficiency_factor:g}× "
            "between the stages (descriptive: the stages used different data, learning rates and objectives).",
            f"Transfer: a later stage reinforces (cos ≥ {self.cosine_threshold:g}) or partly undoes "
            f"(cos ≤ −{self.cosine_threshold:g}) an earlier one; |cos| below that counts as unrelated directions.",
            "A question is unexpected when any hypothesised direction is clearly reversed; else clear difference when "
            "any check is clear; else minimal when something was measured; else not measured.",
        ]


class Evidence(NamedTuple):
    """One number behind a verdict: metric, value and its 95% interval (None for exact weight numbers)."""

    metric: str
    value: float | None
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class Check:
    name: str
    outcome: str
    evidence: list[Evidence]
    hypothesis: str | None = None
    """Id of the :data:`HYPOTHESES` entry whose direction this check tests, if any."""
    rule: str = ""
    """The criterion applied, with its numbers."""


@dataclass(frozen=True)
class Verdict:
    question: str
    label: str
    criterion: str
    evidence: list[Evidence]
    figure: str | None = None
    """Key of the figure that supports the verdict (a path relative to the output folder)."""
    table: str | None = None
    """Anchor of the table that supports it (``#tbl-…`` in report.html)."""
    checks: list[Check] = field(default_factory=list)
    comparison: str = ""
    """Which models or stages were compared."""
    summary: str = ""


def _combine(question: str, checks: list[Check], criterion: str, figure: str | None, table: str | None,
             comparison: str, why_missing: str = "") -> Verdict:
    outcomes = [c.outcome for c in checks]
    if any(o == REVERSED for o in outcomes):
        label = UNEXPECTED
    elif any(o in (AS_HYPOTHESISED, CLEAR_UNDIRECTED) for o in outcomes):
        label = CLEAR
    elif any(o == NO_CLEAR for o in outcomes):
        label = MINIMAL
    else:
        label = NOT_MEASURED
    evidence = [e for c in checks if c.outcome != NOT_MEASURED for e in c.evidence]
    if label == NOT_MEASURED:
        summary = why_missing or "nothing this question needs was measured"
        figure = table = None
    else:
        counts = {o: outcomes.count(o) for o in (AS_HYPOTHESISED, REVERSED, CLEAR_UNDIRECTED, NO_CLEAR, NOT_MEASURED)}
        summary = "; ".join(f"{n} {o}" for o, n in counts.items() if n) + \
            f" (of {len(checks)} check{'s' if len(checks) != 1 else ''})"
    return Verdict(question, label, criterion, evidence, figure, table, checks, comparison, summary)


# ---------------------------------------------------------------- helpers


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None


def ratio_check(name: str, metric: str, a_name: str, a: float | None, b_name: str, b: float | None, factor: float,
                direction: int = 0, hypothesis: str | None = None) -> Check:
    """Exact numbers of two stages: clear when b/a ≥ factor or ≤ 1/factor; ``direction`` +1 (−1): b > a (b < a) hypothesised."""
    rule = f"ratio {b_name}/{a_name} ≥ {factor:g} or ≤ 1/{factor:g}"
    a, b = _num(a), _num(b)
    if a is None or b is None or a <= 0 or b <= 0:
        ev = [Evidence(f"{metric} [{a_name}]", a), Evidence(f"{metric} [{b_name}]", b)]
        return Check(name, NOT_MEASURED, ev, hypothesis, rule)
    r = b / a
    ev = [Evidence(f"{metric} [{a_name}]", a), Evidence(f"{metric} [{b_name}]", b), Evidence(f"ratio {b_name}/{a_name}", r)]
    clear = r >= factor or r <= 1 / factor
    return Check(name, _outcome(clear, 1 if r > 1 else -1, direction), ev, hypothesis, rule)


def _outcome(clear: bool, sign: int, direction: int) -> str:
    if not clear:
        return NO_CLEAR
    if direction == 0:
        return CLEAR_UNDIRECTED
    return AS_HYPOTHESISED if sign == direction else REVERSED


def _interval(est: dict | None) -> tuple[float, float] | None:
    if not est:
        return None
    lo, hi = _num(est.get("lo")), _num(est.get("hi"))
    return (lo, hi) if lo is not None and hi is not None else None


def difference_check(name: str, metric: str, a_name: str, a_est: dict | None, b_name: str, b_est: dict | None,
                     diff: dict | None, criteria: Criteria, relative: bool, direction: int = 0,
                     hypothesis: str | None = None) -> Check:
    """B − A on one behaviour metric: paired interval excludes 0 and |effect| ≥ the stated size."""
    av, bv = _num((a_est or {}).get("value")), _num((b_est or {}).get("value"))
    size = criteria.relative_effect * abs(av) if relative and av is not None else criteria.share_effect
    size_txt = f"{criteria.relative_effect:.0%} of {a_name}'s value" if relative else f"{criteria.share_effect:g}"
    ev = [Evidence(f"{metric} [{a_name}]", av, _interval(a_est)), Evidence(f"{metric} [{b_name}]", bv, _interval(b_est))]
    if av is None or bv is None:
        return Check(name, NOT_MEASURED, ev, hypothesis, f"{metric} not in the stored results for both models")
    d = _num((diff or {}).get("value"))
    ci = _interval(diff)
    if d is not None and ci is not None:
        rule = f"paired {criteria.level:.0%} interval of {b_name} − {a_name} excludes 0 and |difference| ≥ {size_txt}"
        ev.append(Evidence(f"{metric}: {b_name} − {a_name} (paired)", d, ci))
        clear = (ci[0] > 0 or ci[1] < 0) and abs(d) >= size
    else:
        d = bv - av
        ia, ib = _interval(a_est), _interval(b_est)
        rule = (f"no paired interval stored: the two {criteria.level:.0%} intervals do not overlap and "
                f"|difference| ≥ {size_txt}")
        ev.append(Evidence(f"{metric}: {b_name} − {a_name} (unpaired)", d, None))
        if ia is None or ib is None:
            return Check(name, NOT_MEASURED, ev, hypothesis, rule + " (intervals missing)")
        clear = (ia[1] < ib[0] or ib[1] < ia[0]) and abs(d) >= size
    return Check(name, _outcome(clear, 1 if d > 0 else -1, direction), ev, hypothesis, rule)


def _comparison_text(a: str, b: str, hypotheses: bool) -> str:
    if hypotheses:
        return f"SFT: {a} vs RLVR: {b}"
    return (f"{a} vs {b} (the lineage has no SFT → RLVR pair, so the plan's hypotheses are not tested; "
            "differences are reported without direction)")


# ---------------------------------------------------------------- 1. learning dynamics


def _sumsq(rows: list[dict], field_: str) -> float:
    return sum(float(r.get(field_) or 0.0) ** 2 for r in rows)


def output_focus(tr: Transitions, transition: str | None, fraction: float = 0.25) -> float | None:
    """rel_change of the output layers (last ``fraction`` of layers + LM head) ÷ rel_change of everything else."""
    if transition is None:
        return None
    layers = tr.rows("layer", transition)
    model = tr.row("model", transition)
    if not layers or model is None:
        return None
    ids = sorted({r["key"][0] for r in layers})
    top = set(ids[len(ids) - max(1, math.ceil(fraction * len(ids))):])
    out = [r for r in layers if r["key"][0] in top] + [r for r in tr.rows("group", transition) if r["key"] == ["head"]]
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


def learning_dynamics(summary: dict | None, criteria: Criteria = Criteria()) -> Verdict:
    q = QUESTIONS[0]
    crit = (f"Compare the two stages' weight updates (exact, parameter-weighted): clear when a ratio is beyond "
            f"{criteria.weight_factor:g}× (magnitude, changed share) or {criteria.pattern_factor:g}× (output-layer "
            "focus, attention/MLP balance, stable rank); unexpected when a hypothesised direction (W1, W2, L1) is "
            "clearly reversed.")
    if not summary:
        return _combine(q, [], crit, None, None, "", "no weight results (weights/summary.json) in this folder")
    tr = Transitions(summary)
    stages = stages_of(summary.get("lineage") or {})
    pair = comparison_pair(stages)
    if pair is None:
        return _combine(q, [], crit, None, None, "", "the lineage has a single trained stage; nothing to compare")
    sa, sb, hyp = pair
    ta, tb = tr.stage_transition(sa), tr.stage_transition(sb)
    if ta is None or tb is None:
        return _combine(q, [], crit, None, None, "", "no stored transition measures both stages")
    an, bn = sa.label, sb.label
    F, P = criteria.weight_factor, criteria.pattern_factor
    d = (lambda s: s) if hyp else (lambda s: 0)
    h = (lambda i: i) if hyp else (lambda i: None)
    checks = [
        ratio_check("Magnitude: relative change of the whole model", "rel_change", an, tr.value("model", ta, "rel_change"),
                    bn, tr.value("model", tb, "rel_change"), F),
        ratio_check("Output-layer focus (rel. change of last layers + head ÷ rest)", "output_focus", an,
                    output_focus(tr, ta, criteria.output_fraction), bn, output_focus(tr, tb, criteria.output_fraction),
                    P, d(-1), h("W1")),
        ratio_check("Breadth: share of entries changed (bit-exact)", "changed_exact", an,
                    tr.value("model", ta, "changed_exact"), bn, tr.value("model", tb, "changed_exact"), F, d(+1), h("W2")),
        ratio_check("Attention vs MLP: rel. change of attention ÷ MLP", "attention/mlp", an, attention_mlp_ratio(tr, ta),
                    bn, attention_mlp_ratio(tr, tb), P, d(+1), h("W2")),
    ]
    if tr.value("model", ta, "stable_rank_wmean") is not None:
        checks.append(ratio_check("Update complexity: stable rank of ΔW", "stable_rank (param-weighted mean)", an,
                                  tr.value("model", ta, "stable_rank_wmean"), bn, tr.value("model", tb, "stable_rank_wmean"),
                                  P, d(+1), h("L1")))
    if tr.value("model", ta, "principal_overlap_wmean") is not None:
        checks.append(ratio_check("Principal-weight overlap (1 = chance)", "principal_overlap (param-weighted mean)", an,
                                  tr.value("model", ta, "principal_overlap_wmean"), bn,
                                  tr.value("model", tb, "principal_overlap_wmean"), P))
    return _combine(q, checks, crit, "sft_vs_rlvr_comparison.png", "#tbl-weights-model",
                    _comparison_text(f"{an} ({ta})", f"{bn} ({tb})", hyp))


# ---------------------------------------------------------------- 2. reasoning behaviour

BEHAVIOUR_CHECKS = (
    # (name, metric, relative effect?, direction of RLVR − SFT, hypothesis)
    ("Accuracy (≈ pass@1)", "accuracy", False, 0, None),
    ("pass@k at the largest k", "pass@K", False, 0, None),
    ("Distinct final answers per problem", "distinct_answers", True, +1, "B1"),
    ("Answer confidence (agreement with the modal answer)", "answer_confidence", False, -1, "B1"),
    ("Response length", "length_mean", True, +1, "B2"),
    ("Reasoning diversity (distinct-4 within a problem)", "distinct_4", False, +1, "B3"),
    ("Token entropy", "token_entropy", True, +1, "B3"),
    ("Calibration error (ECE)", "ece", False, 0, None),
)


def behaviour_pair(results: dict | None) -> tuple[str, str, bool] | None:
    """The two models the reasoning verdict compares: (SFT model, RLVR model, True), else (first, last, False)."""
    if not results or not results.get("models"):
        return None
    names = list(results["models"])
    if len(names) < 2:
        return None
    lineage = results.get("lineage") or {"checkpoints": [{"name": n, "label": n} for n in names]}
    stages = [s for s in stages_of(lineage) if s.name in names]
    pair = comparison_pair(stages, trained_only=False)
    if pair is not None and pair[2]:
        return pair[0].name, pair[1].name, True
    return names[0], names[-1], False


def stored_difference(results: dict, a: str, b: str, extra: dict | None = None) -> dict[str, dict] | None:
    """Paired differences B − A: stored consecutive ones, or ``extra[(a, b)]`` computed from the samples."""
    for c in results.get("consecutive") or []:
        if c.get("a") == a and c.get("b") == b:
            return c.get("difference") or {}
    return (extra or {}).get((a, b))


def reasoning_behaviour(results: dict | None, criteria: Criteria = Criteria(),
                        extra_differences: dict | None = None) -> Verdict:
    q = QUESTIONS[1]
    crit = criteria.text()[0] + " Unexpected when a hypothesised direction (B1–B3) is clearly reversed."
    pair = behaviour_pair(results)
    if pair is None:
        why = "no behaviour results (model_comparison_results.json) in this folder" if not results else \
            "behaviour was measured for fewer than two models"
        return _combine(q, [], crit, None, None, "", why)
    a, b, hyp = pair
    ks = results.get("ks") or []
    kmax = f"pass@{max(ks)}" if ks else None
    diff = stored_difference(results, a, b, extra_differences)
    ma, mb = results["models"][a].get("metrics", {}), results["models"][b].get("metrics", {})
    checks = []
    for name, metric, rel, direction, hid in BEHAVIOUR_CHECKS:
        m = kmax if metric == "pass@K" else metric
        if m is None:
            continue
        if metric == "pass@K":
            name = f"pass@{max(ks)}"
        checks.append(difference_check(name, m, a, ma.get(m), b, mb.get(m), (diff or {}).get(m), criteria, rel,
                                       direction if hyp else 0, hid if hyp else None))
    return _combine(q, checks, crit, "behavior/pass_at_k.png", "#tbl-behaviour", _comparison_text(a, b, hyp))


def pass_at_k_crossings(results: dict, a: str, b: str) -> list[int]:
    """The k at which B's pass@k stops being above (or below) A's: the first k of each sign change."""
    ks = results.get("ks") or []
    ma, mb = results["models"][a]["metrics"], results["models"][b]["metrics"]
    signs = []
    for k in ks:
        va, vb = _num(ma.get(f"pass@{k}", {}).get("value")), _num(mb.get(f"pass@{k}", {}).get("value"))
        signs.append(None if va is None or vb is None else (vb > va) - (vb < va))
    out, prev = [], None
    for k, s in zip(ks, signs):
        if s:
            if prev is not None and s != prev:
                out.append(k)
            prev = s
    return out


# ---------------------------------------------------------------- 3. sample efficiency


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


def efficiency_rows(summary: dict | None) -> list[EfficiencyRow]:
    if not summary:
        return []
    tr = Transitions(summary)
    rows = []
    for s in stages_of(summary.get("lineage") or {}):
        if s.start is None:
            continue
        dist, how = tr.distance(s.start, s.end)
        names = [c.get("name") for c in (summary.get("lineage") or {}).get("checkpoints") or []]
        t = tr.name(s.start, s.end) if how == "stored" else (
            f"{names[s.start]}→{names[s.end]} (derived from steps and their cosine)" if how else None)
        field_, n = _items(s)
        ep = s.facts.get("epochs")
        lr = s.facts.get("learning_rate")
        rows.append(EfficiencyRow(s.label, s.role, t, dist, None if dist is not None else tr.path_length(s.start, s.end),
                                  field_, n, float(ep) if isinstance(ep, (int, float)) else None,
                                  float(lr) if isinstance(lr, (int, float)) else None))
    return rows


def sample_efficiency(summary: dict | None, criteria: Criteria = Criteria()) -> Verdict:
    q = QUESTIONS[2]
    crit = (f"Weight change per training item (relative change of the stage ÷ its distinct training examples, "
            f"pairs or prompts, from the stage facts): clear when the two stages differ by ≥ "
            f"{criteria.efficiency_factor:g}× either way. No direction is hypothesised in the plan. Caveat: the stages "
            "used different data, objectives and learning rates, and weight change is not learning; this is a "
            "descriptive rate, not a controlled comparison.")
    if not summary:
        return _combine(q, [], crit, None, None, "", "no weight results (weights/summary.json) in this folder")
    stages = stages_of(summary.get("lineage") or {})
    pair = comparison_pair(stages)
    rows = {r.stage: r for r in efficiency_rows(summary)}
    if pair is None:
        return _combine(q, [], crit, None, None, "", "the lineage has a single trained stage; nothing to compare")
    sa, sb, _ = pair
    ra, rb = rows.get(sa.label), rows.get(sb.label)
    unknown = [s.label for s, r in ((sa, ra), (sb, rb)) if r and r.items and r.rel_change is None]
    if unknown:
        return _combine(q, [], crit, None, None, "",
                        f"the whole-stage change of {', '.join(unknown)} is not stored (a trajectory stage: the scan "
                        "stores neighbours and changes from the first checkpoint; only the path length, an upper "
                        "bound, is known)")
    if not ra or not rb or ra.per_item is None or rb.per_item is None:
        missing = [s.label for s, r in ((sa, ra), (sb, rb)) if not r or r.items is None]
        return _combine(q, [], crit, None, None, "",
                        f"no training-item counts in the stage facts of {', '.join(missing) or 'the compared stages'} "
                        "(give a preset with facts, or lab checkpoints)")
    check = ratio_check(f"Relative change per training item ({ra.item_field} vs {rb.item_field})", "rel_change per item",
                        sa.label, ra.per_item, sb.label, rb.per_item, criteria.efficiency_factor)
    ev = [Evidence(f"{ra.item_field} [{sa.label}]", float(ra.items)), Evidence(f"{rb.item_field} [{sb.label}]", float(rb.items))]
    check = Check(check.name, check.outcome, ev + check.evidence, None, check.rule)
    return _combine(q, [check], crit, "report/sample_efficiency.png", "#tbl-efficiency", f"{sa.label} vs {sb.label}")


# ---------------------------------------------------------------- 4. transfer


def transfer(summary: dict | None, results: dict | None = None, criteria: Criteria = Criteria()) -> Verdict:
    q = QUESTIONS[3]
    c = criteria.cosine_threshold
    crit = (f"Between stages: cos(ΔW_earlier, ΔW_later) over all tensors; a later stage reinforces the earlier one when "
            f"cos ≥ {c:g} and partly undoes it when cos ≤ −{c:g} (either is a clear difference from independent, "
            f"additive stages); |cos| < {c:g} everywhere is minimal. The plan names no direction here, so this "
            "question is never 'unexpected'.")
    if not summary:
        return _combine(q, [], crit, None, None, "", "no weight results (weights/summary.json) in this folder")
    tr = Transitions(summary)
    stages = [s for s in stages_of(summary.get("lineage") or {}) if s.start is not None]
    stage_of = {}
    for s in stages:
        for m in s.members:
            stage_of[m] = s.label
    checks = []
    for p in (summary.get("aggregates") or {}).get("delta_cosine_model") or []:
        ab1, ab2 = tr.names.get(p.get("t1")), tr.names.get(p.get("t2"))
        if ab1 is None or ab2 is None or stage_of.get(ab1[1]) == stage_of.get(ab2[1]):
            continue  # within one stage: a trajectory, shown under sample efficiency
        v = _num(p.get("delta_cosine"))
        if v is None:
            outcome = NOT_MEASURED
        else:
            outcome = CLEAR_UNDIRECTED if abs(v) >= c else NO_CLEAR
        what = "" if v is None or abs(v) < c else (" (reinforces)" if v > 0 else " (partly undoes)")
        checks.append(Check(f"Direction: {p['t1']} vs {p['t2']}{what}", outcome,
                            [Evidence(f"cos(Δ[{p['t1']}], Δ[{p['t2']}])", v)], None, f"|cos| ≥ {c:g}"))
    # accumulation: straight-line change from the first checkpoint vs the path through the stages
    cps = (summary.get("lineage") or {}).get("checkpoints") or []
    last = len(cps) - 1
    total = tr.value("model", tr.name(0, last), "delta_norm") if last >= 2 else None
    steps = [tr.value("model", tr.name(i, i + 1), "delta_norm") for i in range(last)]
    extra = []
    if total is not None and steps and all(x is not None for x in steps):
        path = sum(steps)
        extra = [Evidence(f"‖ΔW[{tr.name(0, last)}]‖_F", total), Evidence("Σ‖ΔW‖_F over consecutive steps", path),
                 Evidence("straightness = ‖cumulative‖ ÷ Σ‖consecutive‖ (1 = all steps aligned)", total / path)]
    if results and results.get("consecutive"):
        for cmp_ in results["consecutive"]:
            ss = cmp_.get("solved_sets") or {}
            if "a_only" in ss and "b_only" in ss:
                extra.append(Evidence(f"problems solved by {cmp_['a']} but no longer by {cmp_['b']}", float(ss["a_only"])))
                extra.append(Evidence(f"problems newly solved by {cmp_['b']}", float(ss["b_only"])))
    v = _combine(q, checks, crit, "report/transfer.png", "#tbl-transfer", "consecutive stages of the lineage",
                 "fewer than two stage transitions with a stored Δ cosine")
    if extra and v.label != NOT_MEASURED:
        v = Verdict(v.question, v.label, v.criterion, v.evidence + extra, v.figure, v.table, v.checks, v.comparison,
                    v.summary)
    return v


def all_verdicts(summary: dict | None, results: dict | None, criteria: Criteria = Criteria(),
                 extra_differences: dict | None = None) -> list[Verdict]:
    """The four questions' verdicts, in the plan's order."""
    return [learning_dynamics(summary, criteria), reasoning_behaviour(results, criteria, extra_differences),
            sample_efficiency(summary, criteria), transfer(summary, results, criteria)]
