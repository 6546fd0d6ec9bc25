"""The vocabulary of the verdicts: labels and check outcomes, the study's hypotheses, the criteria and their
thresholds, the Check/Verdict records, and how a question's checks combine into its verdict.

Holm's correction and :func:`rejectable_from` live here (unchanged) because :class:`Criteria` states them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ptlens.results import files as FILES
from ptlens.stats.multiple import rejectable_from

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


def no_weights(question: str, criterion: str) -> Verdict:
    """A weight question's verdict in a folder the weight scan never wrote to."""
    return combine(question, [], criterion, None, None, "", f"no weight results ({FILES.WEIGHT_SUMMARY}) in this folder")


def combine(question: str, checks: list[Check], criterion: str, figure: str | None, table: str | None,
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
