"""Verdicts for the study's questions, computed from stored results by stated criteria with a stated error rate.

"The study's hypotheses" are the directions the user's analysis plan expects (README, "The
report"; docs/METRICS.md, "Verdicts"); they are stated here as :data:`HYPOTHESES` and tested, never printed as
findings. Pure functions: they take the dicts of ``weights/summary.json`` and
``model_comparison_results.json`` (either may be None) and return :class:`Verdict` objects.
Nothing here reads a file or draws a figure.

Each question is answered by *checks*. A check compares the two stages the hypotheses are
about (SFT and RLVR; without them, the first and the last trained stage):

- behaviour (sampled, so tested): *clear* when the paired sign-flip permutation test over
  problems rejects "no difference" after Holm's correction over the question's checks
  (family-wise error ≤ α = 0.05) and the difference is at least a stated size. Exact under
  the null that both models answer each problem alike, with any number of problems; no
  verdict below :attr:`Criteria.min_problems` problems (see :func:`design`);
- weights (exact numbers, no sampling): compared as excess over their null — what an
  unstructured update of the same ‖ΔW‖_F, stored in the same dtype, would give — when the
  scan stored ``<metric>_null``; *clear* when the two stages' null-normalised values differ
  by a stated factor. Raw magnitudes (rel_change) are *descriptive*: they follow the learning
  rate, and so is magnitude per unit of optimiser travel (learning rate × steps), which has no null;
- sample efficiency: descriptive (items of different kinds are not compared);
- transfer: each pair of stage updates *reinforces*, *undoes* or is *unrelated* by its cosine.

A clear check whose direction a hypothesis names comes out *as hypothesised* or *reversed*;
one without is *clear difference*. The question's verdict is **unexpected** when any check
reversed, else **clear difference** when any check is clear, else **minimal** when at least
one check was tested, else **descriptive** when numbers were only described, else **not
measured**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from ptlens.report.stages import ITEM_FIELDS, Stage, Transitions, comparison_pair, stages_of
from ptlens.results import files as FILES
from ptlens.stats.multiple import holm, rejectable_from

# verdict labels
CLEAR, MINIMAL, UNEXPECTED, NOT_MEASURED = "clear difference", "minimal", "unexpected", "not measured"
DESCRIPTIVE = "descriptive"
REINFORCES, UNDOES, UNRELATED, MIXED = "reinforces", "undoes", "unrelated", "mixed"
LABELS = (CLEAR, MINIMAL, UNEXPECTED, NOT_MEASURED, DESCRIPTIVE, REINFORCES, UNDOES, UNRELATED, MIXED)
# check outcomes (transfer checks use REINFORCES / UNDOES / UNRELATED)
AS_HYPOTHESISED, REVERSED, CLEAR_UNDIRECTED, NO_CLEAR = "as hypothesised", "reversed", "clear difference", "no clear difference"
DESCRIBED = "descriptive"
NO_CHANGE = "no change beyond rounding"

QUESTIONS = ("Learning dynamics", "Reasoning behaviour", "Sample efficiency", "Transfer")
QUESTION_KEYS = {"Learning dynamics": "dynamics", "Reasoning behaviour": "behaviour", "Sample efficiency": "efficiency",
                 "Transfer": "transfer"}
"""The key by which the template and the markdown address each question's verdict (never its position)."""
STUDY = "the study's hypotheses (from the user's analysis plan)"


@dataclass(frozen=True)
class Hypothesis:
    """A direction the user's analysis plan names; a hypothesis to test, not a finding."""

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
                     "RLVR changes a larger share of entries than SFT (relative to an unstructured update of the same "
                     "size, when the scan stored that null), and its attention-to-MLP change ratio is higher"),
    "L1": Hypothesis("L1", "SFT: smooth parameter updates in specific directions; RLVR: more complex update patterns",
                     "RLVR's ΔW spreads over more directions (higher stable rank) than SFT's"),
}


@dataclass(frozen=True)
class Criteria:
    """The thresholds of every check; printed in the report's methods section."""

    level: float = 0.95
    """Bootstrap interval level (set by the behaviour run; the intervals are descriptive)."""
    alpha: float = 0.05
    """Family-wise error rate of each behaviour question (Holm over its checks)."""
    min_problems: int = 10
    """Fewest problems for a behaviour verdict: with the 8 behaviour checks the exact paired test cannot reject at all
    below 9 (its smallest two-sided p-value, 2/2^P, exceeds Holm's first threshold α/8); one more leaves room for
    ties. The report computes both counts (:func:`rejectable_from`)."""
    share_effect: float = 0.05
    """Minimum |difference| for metrics that are shares or probabilities (accuracy, pass@k, confidence, distinct-n, ECE)."""
    relative_effect: float = 0.10
    """Minimum |difference| ÷ the first model's value for metrics with units (tokens, nats, answers per problem)."""
    weight_factor: float = 2.0
    """Magnitude per unit of optimiser travel: the factor shown beside the (descriptive) ratio; no longer a decision."""
    pattern_factor: float = 1.5
    """Ratios describing where or how a stage changes the weights (breadth, focus, attention/MLP balance, stable rank,
    principal overlap), each relative to its null when stored."""
    null_margin: float = 0.10
    """A transition whose every stored metric is within this share of its null reads "no change beyond rounding"."""
    efficiency_factor: float = 2.0
    """Weight change per training item of the same kind: clear when the ratio between stages is ≥ this or ≤ its inverse."""
    cosine_threshold: float = 0.10
    """|cos(ΔW_1, ΔW_2)| at or above this (and beyond chance): a later stage reinforces (> 0) or undoes (< 0) an earlier one."""
    cosine_chance_z: float = 4.0
    """Two independent updates of n parameters have cos ≈ N(0, 1/n); |cos| below this many 1/√n is chance."""
    output_fraction: float = 0.25
    """The output layers of hypothesis W1: this last share of the layers (at least one), plus the LM head."""

    def text(self) -> list[str]:
        return [
            f"Behaviour: a check is clear when the paired sign-flip permutation test over problems (swapping the two "
            f"models' samples within problems; exact under the null of identical answer distributions, whatever the "
            f"number of problems) rejects after Holm's correction over the question's checks at family-wise error "
            f"{self.alpha:g}, and |difference| ≥ {self.share_effect:g} for shares (accuracy, pass@k, answer confidence, "
            f"distinct-n, ECE) or ≥ {self.relative_effect:.0%} of the first model's value for metrics with units "
            f"(length in tokens, token entropy in nats, distinct answers per problem). The {self.level:.0%} bootstrap "
            "intervals shown are descriptive; the decision is the test's.",
            f"Behaviour needs at least {self.min_problems} problems for a verdict: with {N_BEHAVIOUR_CHECKS} checks the "
            f"exact test cannot reject at all below {rejectable_from(self.alpha, N_BEHAVIOUR_CHECKS)} problems (smallest two-sided p-value "
            f"2/2^P > α/{N_BEHAVIOUR_CHECKS} = {self.alpha / N_BEHAVIOUR_CHECKS:g}).",
            f"Weights: values are exact (no sampling). Where the scan stored a null (`<metric>_null`: what an unstructured "
            f"update of the same ‖ΔW‖_F, added to W_A and stored in B's dtype, would give) each stage's value is divided "
            f"by its null (1 = no structure beyond noise of that size) before the stages are compared; without a null "
            f"the raw values are compared and the check says so. Clear when the ratio between stages is "
            f"≥ {self.pattern_factor:g}× or ≤ 1/{self.pattern_factor:g} (breadth, output-layer focus, attention/MLP "
            f"balance, stable rank, principal overlap). A transition within {self.null_margin:.0%} of its null on every "
            "stored metric, or with no stored value changed, reads 'no change beyond rounding' and its checks are not clear.",
            "Magnitude (rel_change) is descriptive: it follows the learning rate and the number of steps. Per unit of "
            "optimiser travel, rel_change ÷ (learning rate × steps), it is shown when the stage facts give both, and "
            "still descriptive: it has no null, and one peak learning rate stands for different schedules.",
            f"Sample efficiency: weight change per distinct training item is descriptive when the stages count different "
            f"kinds of items (examples, pairs, prompts); between items of one kind clear at ≥ {self.efficiency_factor:g}× "
            "either way (still not a controlled comparison: data, objectives and learning rates differ).",
            f"Transfer: a later stage reinforces an earlier one when cos(ΔW_earlier, ΔW_later) ≥ {self.cosine_threshold:g}, "
            f"undoes it when ≤ −{self.cosine_threshold:g}, and is unrelated otherwise or when |cos| < "
            f"{self.cosine_chance_z:g}/√n (two independent updates of n parameters have cos ≈ N(0, 1/n)).",
            "A question is unexpected when any hypothesised direction is clearly reversed; else clear difference when "
            "any check is clear; else minimal when something was tested; else descriptive when numbers were only "
            "described; else not measured.",
        ]


class Evidence(NamedTuple):
    """One number behind a verdict: metric, value and its bootstrap interval at the run's level (None for exact
    weight numbers)."""

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
    p: float | None = None
    """Behaviour: the paired test's two-sided p-value."""
    p_adjusted: float | None = None
    """Behaviour: Holm-adjusted over the question's tested checks."""


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


_ORDER = (AS_HYPOTHESISED, REVERSED, CLEAR_UNDIRECTED, NO_CLEAR, REINFORCES, UNDOES, UNRELATED, DESCRIBED, NOT_MEASURED)


def _no_weights(question: str, criterion: str) -> Verdict:
    """A weight question's verdict in a folder the weight scan never wrote to."""
    return _combine(question, [], criterion, None, None, "", f"no weight results ({FILES.WEIGHT_SUMMARY}) in this folder")


def _combine(question: str, checks: list[Check], criterion: str, figure: str | None, table: str | None,
             comparison: str, why_missing: str = "", note: str = "") -> Verdict:
    outcomes = [c.outcome for c in checks]
    if any(o == REVERSED for o in outcomes):
        label = UNEXPECTED
    elif any(o in (AS_HYPOTHESISED, CLEAR_UNDIRECTED) for o in outcomes):
        label = CLEAR
    elif any(o == NO_CLEAR for o in outcomes):
        label = MINIMAL
    elif any(o in (REINFORCES, UNDOES, UNRELATED) for o in outcomes):
        found = {o for o in outcomes if o in (REINFORCES, UNDOES, UNRELATED)}
        label = found.pop() if len(found) == 1 else MIXED
    elif any(o == DESCRIBED for o in outcomes):
        label = DESCRIPTIVE
    else:
        label = NOT_MEASURED
    evidence = [e for c in checks if c.outcome != NOT_MEASURED for e in c.evidence]
    if label == NOT_MEASURED:
        summary = why_missing or "nothing this question needs was measured"
        figure = table = None
    else:
        counts = {o: outcomes.count(o) for o in _ORDER}
        summary = "; ".join(f"{n} {o}" for o, n in counts.items() if n) + \
            f" (of {len(checks)} check{'s' if len(checks) != 1 else ''})"
        if note:
            summary = f"{note}; {summary}"
    return Verdict(question, label, criterion, evidence, figure, table, checks, comparison, summary)


# ---------------------------------------------------------------- helpers


def finite_number(v) -> float | None:
    """A stored number as a float; None for a missing, non-numeric (bool included) or non-finite value."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)) else None


def ratio_check(name: str, metric: str, a_name: str, a: float | None, b_name: str, b: float | None, factor: float,
                direction: int = 0, hypothesis: str | None = None, note: str = "") -> Check:
    """Exact numbers of two stages: clear when b/a ≥ factor or ≤ 1/factor; ``direction`` +1 (−1): b > a (b < a) hypothesised."""
    rule = f"ratio {b_name}/{a_name} ≥ {factor:g} or ≤ 1/{factor:g}" + (f" ({note})" if note else "")
    a, b = finite_number(a), finite_number(b)
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
    lo, hi = finite_number(est.get("lo")), finite_number(est.get("hi"))
    return (lo, hi) if lo is not None and hi is not None else None


def difference_check(name: str, metric: str, a_name: str, a_est: dict | None, b_name: str, b_est: dict | None,
                     diff: dict | None, criteria: Criteria, relative: bool, direction: int = 0,
                     hypothesis: str | None = None, p_adjusted: float | None = None, family: int = 1) -> Check:
    """B − A on one behaviour metric: the (Holm-adjusted) paired test rejects at α and |effect| ≥ the stated size.

    ``p_adjusted`` comes from :func:`holm` over the question's ``family`` checks; without it the raw p is used.
    """
    av, bv = finite_number((a_est or {}).get("value")), finite_number((b_est or {}).get("value"))
    size = criteria.relative_effect * abs(av) if relative and av is not None else criteria.share_effect
    size_txt = f"{criteria.relative_effect:.0%} of {a_name}'s value" if relative else f"{criteria.share_effect:g}"
    ev = [Evidence(f"{metric} [{a_name}]", av, _interval(a_est)), Evidence(f"{metric} [{b_name}]", bv, _interval(b_est))]
    if av is None or bv is None:
        return Check(name, NOT_MEASURED, ev, hypothesis, f"{metric} not in the stored results for both models")
    d = finite_number((diff or {}).get("value"))
    p = finite_number((diff or {}).get("p"))
    rule = (f"paired sign-flip test of {b_name} − {a_name}, Holm-adjusted over {family} check{'s' if family != 1 else ''}, "
            f"p ≤ {criteria.alpha:g} and |difference| ≥ {size_txt}")
    if d is None or p is None:
        if d is not None:
            ev.append(Evidence(f"{metric}: {b_name} − {a_name} (paired)", d, _interval(diff)))
        return Check(name, NOT_MEASURED, ev, hypothesis,
                     "no paired test stored for this pair (results of an older ptlens, or no behavior/samples.jsonl to "
                     "recompute it from): rerun ptlens behavior or rebuild the report beside its samples")
    padj = p if p_adjusted is None else p_adjusted
    ev += [Evidence(f"{metric}: {b_name} − {a_name} (paired)", d, _interval(diff)),
           Evidence("p (sign-flip, two-sided)", p), Evidence("p (Holm-adjusted)", padj)]
    clear = padj <= criteria.alpha and abs(d) >= size
    return Check(name, _outcome(clear, 1 if d > 0 else -1, direction), ev, hypothesis, rule, p, padj)


def _comparison_text(a: str, b: str, hypotheses: bool) -> str:
    if hypotheses:
        return f"SFT: {a} vs RLVR: {b}"
    return (f"{a} vs {b} (the lineage has no SFT → RLVR pair, so {STUDY} are not tested; "
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


def null_of(row: dict | None, metric: str) -> float | None:
    """The stored null of ``metric`` in an aggregate row: ``<metric>_null`` (or ``x_null_wmean`` for ``x_wmean``)."""
    if not row:
        return None
    names = [f"{metric}_null"] + ([metric.replace("_wmean", "_null_wmean")] if metric.endswith("_wmean") else [])
    for name in names:
        v = finite_number(row.get(name))
        if v is not None:
            return v
    return None


def null_pairs(row: dict | None) -> dict[str, tuple[float, float]]:
    """{metric: (observed, null)} for every metric of ``row`` with a stored null."""
    out = {}
    for k in row or {}:
        if "_null" not in k:
            continue
        base = k.replace("_null", "")
        obs, nul = finite_number(row.get(base)), finite_number(row.get(k))
        if obs is not None and nul is not None:
            out[base] = (obs, nul)
    return out


def beyond_rounding(tr: Transitions, transition: str | None, margin: float = 0.10) -> bool | None:
    """False when the transition changed nothing beyond rounding: no stored value differs (changed_exact = 0), or
    every metric with a stored null is within ``margin`` (relative) of it; True when some metric is beyond;
    None when nothing tells (no null stored)."""
    row = tr.row("model", transition)
    if row is None:
        return None
    if finite_number(row.get("changed_exact")) == 0.0:
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


def learning_dynamics(summary: dict | None, criteria: Criteria = Criteria()) -> Verdict:
    q = QUESTIONS[0]
    P = criteria.pattern_factor
    crit = (f"Compare the two stages' whole-stage weight updates (exact, parameter-weighted), each metric divided by its "
            f"null (an unstructured update of the same size) where the scan stored one: clear when a ratio is beyond "
            f"{P:g}× either way (breadth, output-layer focus, attention/MLP balance, stable rank, principal overlap); "
            "unexpected when a hypothesised direction (W1, W2, L1) is clearly reversed. Magnitude, raw or per unit of "
            "learning rate × steps, is shown but descriptive: it has no null.")
    if not summary:
        return _no_weights(q, crit)
    tr = Transitions(summary)
    stages = stages_of(summary.get("lineage") or {})
    pair = comparison_pair(stages)
    if pair is None:
        return _combine(q, [], crit, None, None, "", "the lineage has a single trained stage; nothing to compare")
    sa, sb, hyp = pair
    ta, tb = tr.stage_transition(sa), tr.stage_transition(sb)
    if ta is None or tb is None:
        missing = [f"{s.label} ({s.names[0]}…{s.name})" for s, t in ((sa, ta), (sb, tb)) if t is None]
        return _combine(q, [], crit, None, None, "",
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
    return _combine(q, checks, crit, FILES.OVERVIEW_FIGURE, "#tbl-weights-model",
                    _comparison_text(f"{an} ({ta})", f"{bn} ({tb})", hyp), note=note)


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
N_BEHAVIOUR_CHECKS = len(BEHAVIOUR_CHECKS)


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
    """Paired differences B − A: ``extra[(a, b)]`` recomputed from the samples when given, else the stored
    consecutive ones."""
    if (a, b) in (extra or {}):
        return extra[(a, b)]
    for c in results.get("consecutive") or []:
        if c.get("a") == a and c.get("b") == b:
            return c.get("difference") or {}
    return None


def has_test(results: dict | None, a: str, b: str) -> bool:
    """Whether the stored results carry the paired test (p-values) for B − A."""
    d = stored_difference(results or {}, a, b)
    return bool(d) and any(isinstance(v, dict) and "p" in v for v in d.values())


def n_problems(results: dict, *names: str) -> int | None:
    """Problems both models answered (the unit of every behaviour test)."""
    counts = [(results.get("models") or {}).get(n, {}).get("n_problems") for n in names]
    counts = [c for c in counts if isinstance(c, int)]
    if counts:
        return min(counts)
    return len(results.get("problems") or []) or None


def limit_for(results: dict | None, wanted: int) -> int | None:
    """The ``--limit`` that gives ``wanted`` headline problems: held-out problems (reported apart) are loaded in the
    same share as in this run, so the limit grows by it; checked against the run's own problem order where it
    reaches."""
    if wanted is None or wanted < 1:
        return None
    head = (results or {}).get("headline_problems") or {}
    n, of = head.get("n"), head.get("of")
    if not head.get("excluded_tag") or not isinstance(n, int) or not isinstance(of, int) or n < 1:
        return wanted
    keep = [head["excluded_tag"] not in (p.get("tags") or ()) for p in (results or {}).get("problems") or []]
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


def too_few_problems(results: dict, n: int, criteria: Criteria) -> str:
    """Why the behaviour verdict is not given, what was excluded, and a --limit that gives enough problems."""
    head = results.get("headline_problems") or {}
    loaded = head.get("of") if head.get("excluded_tag") else None
    left = (f" of {loaded} loaded: the {loaded - n} {head['excluded_tag']} problems are reported apart (accuracy by "
            "tag) and not counted" if isinstance(loaded, int) and loaded > n else "")
    return (f"not measured: too few problems ({n}{left}); a verdict needs ≥ {criteria.min_problems}: run with --limit "
            f"{limit_for(results, criteria.min_problems)} or more — the design in the methods gives the power at each size")


def reasoning_behaviour(results: dict | None, criteria: Criteria = Criteria(),
                        extra_differences: dict | None = None) -> Verdict:
    q = QUESTIONS[1]
    crit = " ".join(criteria.text()[:2]) + " Unexpected when a hypothesised direction (B1–B3) is clearly reversed."
    pair = behaviour_pair(results)
    if pair is None:
        why = "no behaviour results (model_comparison_results.json) in this folder" if not results else \
            "behaviour was measured for fewer than two models"
        return _combine(q, [], crit, None, None, "", why)
    a, b, hyp = pair
    n = n_problems(results, a, b)
    if n is not None and n < criteria.min_problems:
        return _combine(q, [], crit, None, None, _comparison_text(a, b, hyp), too_few_problems(results, n, criteria))
    ks = results.get("ks") or []
    kmax = f"pass@{max(ks)}" if ks else None
    diff = stored_difference(results, a, b, extra_differences)
    ma, mb = results["models"][a].get("metrics", {}), results["models"][b].get("metrics", {})
    plan = []
    for name, metric, rel, direction, hid in BEHAVIOUR_CHECKS:
        m = kmax if metric == "pass@K" else metric
        if m is None:
            continue
        if metric == "pass@K":
            name = f"pass@{max(ks)}"
        ok = finite_number((ma.get(m) or {}).get("value")) is not None and finite_number((mb.get(m) or {}).get("value")) is not None
        p = finite_number(((diff or {}).get(m) or {}).get("p")) if ok else None
        plan.append((name, m, rel, direction, hid, p))
    adjusted = holm([x[5] for x in plan])
    family = sum(x[5] is not None for x in plan)
    checks = [difference_check(name, m, a, ma.get(m), b, mb.get(m), (diff or {}).get(m), criteria, rel,
                               direction if hyp else 0, hid if hyp else None, padj, family)
              for (name, m, rel, direction, hid, _), padj in zip(plan, adjusted)]
    return _combine(q, checks, crit, FILES.BEHAVIOR_FIGURES["pass_at_k"], "#tbl-behaviour", _comparison_text(a, b, hyp),
                    "no paired test is stored for the compared models" if any(c.outcome == NOT_MEASURED for c in checks)
                    else "")


def pass_at_k_crossings(results: dict, a: str, b: str) -> list[int]:
    """The k at which B's pass@k stops being above (or below) A's: the first k of each sign change."""
    ks = results.get("ks") or []
    ma, mb = results["models"][a]["metrics"], results["models"][b]["metrics"]
    signs = []
    for k in ks:
        va, vb = finite_number(ma.get(f"pass@{k}", {}).get("value")), finite_number(mb.get(f"pass@{k}", {}).get("value"))
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
    crit = ("Weight change per training item (relative change of the whole stage ÷ its distinct training examples, "
            "pairs or prompts, from the stage facts). Descriptive when the stages count different kinds of items "
            f"(an SFT example, a preference pair and an RL prompt are not one unit); between items of one kind clear "
            f"at ≥ {criteria.efficiency_factor:g}× either way. No direction is hypothesised. Caveats: the stages used "
            "different data, objectives and learning rates, and weight change is not learning; a rate, not a "
            "controlled comparison.")
    if not summary:
        return _no_weights(q, crit)
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
                        f"the whole-stage change of {', '.join(unknown)} is not stored (a trajectory stage scanned by an "
                        "older ptlens: only the path length, an upper bound, is known; rescan to store stage spans)")
    if not ra or not rb or ra.per_item is None or rb.per_item is None:
        missing = [s.label for s, r in ((sa, ra), (sb, rb)) if not r or r.items is None]
        return _combine(q, [], crit, None, None, "",
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
    return _combine(q, [check], crit, FILES.REPORT_FIGURES["sample_efficiency"], "#tbl-efficiency", f"{sa.label} vs {sb.label}")


# ---------------------------------------------------------------- 4. transfer


def cosine_chance(n: int | None, z: float = 4.0) -> float | None:
    """|cos| two independent random updates of n parameters exceed with probability ≈ 2Φ(−z): cos ≈ N(0, 1/n)."""
    return z / math.sqrt(n) if n else None


def transfer_check(tr: Transitions, t1: str, t2: str, criteria: Criteria) -> Check:
    """Does the later update reinforce (cos ≥ c), undo (cos ≤ −c) or stand unrelated to the earlier one?"""
    c = criteria.cosine_threshold
    v = tr.delta_cosine(t1, t2)
    n = finite_number((tr.row("model", t1) or {}).get("entries"))
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


def transfer(summary: dict | None, results: dict | None = None, criteria: Criteria = Criteria()) -> Verdict:
    q = QUESTIONS[3]
    c = criteria.cosine_threshold
    crit = (f"Between the whole-stage updates of neighbouring stages (and of the first and last stage): cos(ΔW_earlier, "
            f"ΔW_later) over all tensors; the later stage reinforces the earlier one when cos ≥ {c:g}, undoes it when "
            f"cos ≤ −{c:g}, and is unrelated when |cos| < {c:g} or within chance ({criteria.cosine_chance_z:g}/√n for n "
            f"parameters: independent updates have cos ≈ N(0, 1/n)). {STUDY[0].upper() + STUDY[1:]} name no direction "
            "here, so this question is never 'unexpected'; the verdict names the outcome (mixed when pairs differ).")
    if not summary:
        return _no_weights(q, crit)
    tr = Transitions(summary)
    stages = [s for s in stages_of(summary.get("lineage") or {}) if s.start is not None]
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
    v = _combine(q, checks, crit, FILES.REPORT_FIGURES["transfer"], "#tbl-transfer", "whole-stage updates of the lineage's stages",
                 "fewer than two stage transitions with a stored Δ cosine")
    if extra and v.label != NOT_MEASURED:
        v = Verdict(v.question, v.label, v.criterion, v.evidence + extra, v.figure, v.table, v.checks, v.comparison,
                    v.summary)
    return v


def all_verdicts(summary: dict | None, results: dict | None, criteria: Criteria = Criteria(),
                 extra_differences: dict | None = None) -> list[Verdict]:
    """The four questions' verdicts, in the order of the user's analysis plan."""
    return [learning_dynamics(summary, criteria), reasoning_behaviour(results, criteria, extra_differences),
            sample_efficiency(summary, criteria), transfer(summary, results, criteria)]
