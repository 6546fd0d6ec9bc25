"""The methods section: every definition the report's numbers rest on (the words of docs/METRICS.md), and the decision rule."""

from __future__ import annotations

from ptlens.results import registry as REG
from ptlens.results.store import BehaviorResults, WeightSummary

DELTA_DEFINITION = ("ΔW", "W_B − W_A for one tensor and one transition A → B, in float32 or wider on upcast copies; rows "
                          "present in only one checkpoint (a resized vocabulary) are excluded and reported as added rows.")
SPECTRAL_APPROXIMATION = (
    "spectral approximation", "--spectral topk: randomized block-Krylov SVD (k = the scan's k) with a correction from "
                              "the last Krylov steps; measured error ≤ 1% on Gaussian, low-rank + noise and power-law "
                              "matrices up to 4096 × 14336 (docs/validation/weights.md), and a per-value estimate "
                              "(sigma1_err, stable_rank_err, top*_energy_err in tensors.csv: twice the last steps' "
                              "change, empirical, not a bound). --spectral full: exact SVDs of W_A, W_B and ΔW.")
DERIVED_DEFINITIONS = [
    ("output_focus", "rel_change of the output layers (the last quarter of the layers, at least one, plus the LM head) ÷ "
                     "rel_change of all other tensors of the same transition (used by hypothesis W1)."),
    ("attention/mlp", "rel_change of the attention group ÷ rel_change of the MLP group (hypothesis W2)."),
]


def weight_definitions() -> list[tuple[str, str]]:
    """The weight definitions of the methods section: ΔW, then every registered metric (ptlens.results.registry),
    the spectral approximation before the spectral ones, then the derived quantities the verdicts use."""
    return [DELTA_DEFINITION, *REG.methods_definitions(REG.ELEMENTWISE), *REG.methods_definitions(REG.PAIR),
            SPECTRAL_APPROXIMATION, *REG.methods_definitions(REG.SPECTRAL), *DERIVED_DEFINITIONS]


WEIGHT_DEFINITIONS = weight_definitions()

BEHAVIOUR_DEFINITIONS = [
    ("accuracy", "Mean correctness over all samples (≈ pass@1); a sample is correct when its final answer matches the "
                 "gold answer (math-verify)."),
    ("accuracy_flexible", "Accuracy when the answer is the response's last number, stated or not (lm-evaluation-harness's "
                          "gsm8k flexible-extract), compared as an exact number with the gold; beside the strict "
                          "accuracy for comparison with papers that report it (docs/GRADING.md)."),
    ("grading fallbacks", "Samples whose math-verify comparison overran its 5 s limit or failed, graded instead by exact "
                          "comparison of plain numbers; counted per model (table 'Grading')."),
    ("pass@k", "Unbiased estimator of Chen et al. 2021: mean over problems of 1 − C(n−c, k) / C(n, k)."),
    ("maj@k", "Accuracy of the most frequent (equivalence-clustered) answer among k samples, the exact expectation over "
              "k-subsets."),
    ("solved sets", "Problems solved (≥ 1 correct of n) by A only, B only, both, neither."),
    ("distinct_answers", "Mean number of distinct (equivalence-clustered) final answers per problem."),
    ("distinct-n", "Within a problem's samples, unique word n-grams ÷ total n-grams, n = 1..4; mean over problems."),
    ("length", "Response tokens: mean and median; truncated = share that hit the token limit."),
    ("token_entropy", "Mean over response tokens of −Σ_v p(v) log p(v) (nats), full vocabulary, temperature 1, from a "
                      "teacher-forced pass of the sampling model."),
    ("mean_logprob", "Mean log-probability of the sampled tokens under the sampling model."),
    ("answer_confidence", "Share of a problem's samples that agree with its modal answer."),
    ("ece, brier", "Calibration of answer_confidence against the correctness of the modal answer (10 equal-width bins)."),
    ("cross_ppl", "cross_ppl[B](A) = exp(−mean token log-prob under model B of model A's responses): were A's answers "
                  "already likely under B?"),
    ("cross_kl", "KL[A‖B] per token of A's responses between the sampling distributions (temperature and top-p as "
                 "sampled): full-vocabulary KL at each position of A's responses, summed and divided by A's tokens; "
                 "where top-p leaves B no mass on a token A can emit, B is ε-smoothed (ε = 1e-3) and the position "
                 "counted in cross_kl_inf_share (docs/validation/kl.md)."),
    ("cross_kl estimator", "Each cross_kl value names its estimator (results cross_kl[A][B].estimator, with samples and "
                           "se, the standard error over problems; the run's in settings: scoring): exact = the "
                           "full-vocabulary KL per position (transformers scoring); monte-carlo = the sampled-token "
                           "log-ratio log p̃_A(y) − log q_B(y) along A's samples, from the engine's log-probs (vLLM), "
                           "unbiased for the same KL, noisier (docs/METRICS.md)."),
    ("intervals", "Every headline number carries a {level} percentile bootstrap interval over problems; differences between "
                  "two models are paired (the same problem resamples for both). The intervals describe; verdicts decide "
                  "on the paired test (p)."),
    ("p (paired test)", "Two-sided p-value of a paired difference from the sign-flip permutation test over problems: "
                        "each problem's two sets of samples are swapped between the models in every pattern (all 2^P "
                        "when that is at most the stored count, else that many random patterns, p = (1 + hits)/(1 + N)); "
                        "exact under the null that both models answer each problem alike."),
]

def behaviour_definitions(level: str = "95%") -> list[tuple[str, str]]:
    """The behaviour definitions with the run's interval level (stored by the behaviour run) filled in."""
    return [(n, d.replace("{level}", level)) for n, d in BEHAVIOUR_DEFINITIONS]


EFFICIENCY_DEFINITIONS = [
    ("stage", "Neighbouring checkpoints sharing a label; it starts at the checkpoint before its first member and ends at "
              "its last. Several checkpoints make a trajectory."),
    ("stage change", "rel_change of the stored transition from stage start to stage end, the stage's span, used by every "
                     "question; a part of a stage never stands in for the whole (not stored: derived exactly from two "
                     "steps and their cosine, else not measured)."),
    ("per training item", "Stage change ÷ the number of distinct training items in the stage facts: examples (SFT), "
                          "preference pairs (DPO), prompts (RLVR); per item processed additionally divides by the "
                          "epochs when known."),
    ("distance from stage start", "‖W − W_start‖_F / ‖W_start‖_F, exact when the transition is stored (or derivable "
                                  "from two steps and their cosine)."),
    ("path length", "Σ‖ΔW‖_F of the consecutive steps since the stage start ÷ ‖W_start‖_F: an upper bound of the "
                    "distance, equal when every step points the same way."),
    ("straightness", "‖W_last − W_first‖_F ÷ Σ‖ΔW‖_F over consecutive checkpoints: 1 when all stages push the same "
                     "way, lower when they are unrelated or cancel."),
]


STUDY_HYPOTHESES = ("The study's hypotheses are the directions the user's analysis plan (its \"Expected Results\") expects "
                    "from SFT and RLVR; the report states them as hypotheses and tests them, it never prints them as "
                    "findings.")


def decision_text(criteria, results: BehaviorResults | None = None, summary: WeightSummary | None = None) -> list[str]:
    """The decision rule in one sentence each: rule, FWER, minimum problems, power at this run's size, weight nulls,
    descriptive magnitudes (then the criteria's own wording)."""
    from ptlens.report.calibration import design_of
    from ptlens.report.verdicts import behaviour_pair, null_pairs

    out = [STUDY_HYPOTHESES,
           "Decision rule (behaviour): a check is clear when the paired sign-flip permutation test over problems rejects "
           "'no difference' and the difference reaches the stated size; a question is clear when any check is.",
           f"Family-wise error: Holm's step-down correction over each behaviour question's checks keeps the chance of any "
           f"wrong 'clear difference' or 'unexpected' at most {criteria.alpha:g} when the two models do not differ "
           "(validated by null simulations: docs/validation/verdicts.md).",
           f"Minimum problems: below {criteria.min_problems} problems no behaviour verdict is given ('not measured: too "
           "few problems').",
           ]
    pair = behaviour_pair(results)
    d = design_of(results, pair[0] if pair else None, 0.10, criteria) if results else None
    if d is not None:
        out.append(d.text())
    else:
        out.append("Power: no behaviour results in this folder.")
    has_null = bool(summary) and any(null_pairs(r) for r in summary.rows("model"))
    out.append("Weight nulls: " + (
        "each weight metric is compared with its null, what an unstructured update of the same ‖ΔW‖_F stored in the "
        "same dtype would give (from the weight scan); a transition at its null reads 'no change beyond rounding'."
        if has_null else "this weight scan stored no null values (<metric>_null), so weight checks compare raw values."))
    out.append("Magnitudes are descriptive: rel_change follows the learning rate and the number of steps, so it is "
               "compared between stages only per unit of learning rate × steps, when the stage facts give both.")
    return out + criteria.text()
