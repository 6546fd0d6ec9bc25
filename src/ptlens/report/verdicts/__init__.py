"""Verdicts for the study's questions, computed from stored results by stated criteria with a stated error rate.

"The study's hypotheses" are the directions the user's analysis plan expects (README, "The
report"; docs/METRICS.md, "Verdicts"); they are stated here as :data:`HYPOTHESES` and tested, never printed as
findings. Pure functions: they take the store's records of ``weights/summary.json`` and
``model_comparison_results.json`` (:class:`~ptlens.results.store.WeightSummary`,
:class:`~ptlens.results.store.BehaviorResults`, either may be None; a dict of either file is read as its record)
and return :class:`Verdict` objects.
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

The parts: :mod:`~ptlens.report.verdicts.criteria` (labels, hypotheses, :class:`Criteria`, the
:class:`Check`/:class:`Verdict` records, Holm and how checks combine), :mod:`~ptlens.report.verdicts.checks`
(shared check helpers), and one module per question: :mod:`~ptlens.report.verdicts.dynamics`,
:mod:`~ptlens.report.verdicts.behaviour`, :mod:`~ptlens.report.verdicts.efficiency`,
:mod:`~ptlens.report.verdicts.transfer`. This package exports the names the report, its tests and
``ptlens.report`` use.
"""

from __future__ import annotations

from ptlens.report.verdicts.behaviour import (behaviour_pair, has_test, limit_for, n_problems, pass_at_k_crossings,
                                              reasoning_behaviour, too_few_problems)
from ptlens.report.verdicts.checks import difference_check, finite_number
from ptlens.report.verdicts.criteria import (AS_HYPOTHESISED, BEHAVIOUR_CHECKS, CLEAR, CLEAR_UNDIRECTED, DESCRIBED,
                                             DESCRIPTIVE, HYPOTHESES, MINIMAL, MIXED, NO_CLEAR, NOT_MEASURED,
                                             QUESTION_KEYS, QUESTIONS, REINFORCES, REVERSED, UNDOES, UNEXPECTED, UNRELATED, Check,
                                             Criteria, Evidence, Verdict)
from ptlens.report.verdicts.dynamics import beyond_rounding, learning_dynamics, null_pairs, output_focus
from ptlens.report.verdicts.efficiency import EfficiencyRow, efficiency_rows, sample_efficiency
from ptlens.report.verdicts.transfer import transfer
from ptlens.results.store import BehaviorResults, WeightSummary

__all__ = ["AS_HYPOTHESISED", "BEHAVIOUR_CHECKS", "CLEAR", "CLEAR_UNDIRECTED", "DESCRIBED", "DESCRIPTIVE", "HYPOTHESES",
           "MINIMAL", "MIXED", "NO_CLEAR", "NOT_MEASURED", "QUESTION_KEYS", "QUESTIONS", "REINFORCES", "REVERSED",
           "UNDOES", "UNEXPECTED", "UNRELATED", "Check", "Criteria", "EfficiencyRow", "Evidence", "Verdict",
           "all_verdicts", "behaviour_pair", "beyond_rounding", "difference_check", "efficiency_rows", "finite_number",
           "has_test", "learning_dynamics", "limit_for", "n_problems", "null_pairs", "output_focus",
           "pass_at_k_crossings", "reasoning_behaviour", "sample_efficiency", "too_few_problems",
           "transfer"]


def all_verdicts(summary: WeightSummary | dict | None, results: BehaviorResults | dict | None, criteria: Criteria = Criteria(),
                 extra_differences: dict | None = None) -> list[Verdict]:
    """The four questions' verdicts, in the order of the user's analysis plan."""
    return [learning_dynamics(summary, criteria), reasoning_behaviour(results, criteria, extra_differences),
            sample_efficiency(summary, criteria), transfer(summary, results, criteria)]
