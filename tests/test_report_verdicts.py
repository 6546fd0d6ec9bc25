"""Verdict logic against constructed results with known answers: a clear difference, none, and a reversal."""

from __future__ import annotations

import pytest

from ptlens.report.stages import Transitions, comparison_pair, role_of, stages_of, step_of
from ptlens.report.trajectory import trajectories
from ptlens.report.verdicts import (AS_HYPOTHESISED, CLEAR, CLEAR_UNDIRECTED, MINIMAL, NO_CLEAR, NOT_MEASURED,
                                    REVERSED, UNEXPECTED, Criteria, all_verdicts, difference_check,
                                    efficiency_rows, learning_dynamics, output_focus, pass_at_k_crossings,
                                    reasoning_behaviour, sample_efficiency, transfer)
from test_report_helpers import (behaviour_results, est, four_stage, neutral_metrics, real_behaviour, weights_summary,
                                 zero_diffs)

SAME = {"rel": 0.01, "changed": 0.5, "stable_rank": 10.0, "principal_overlap": 0.8}


def check(verdict, prefix):
    return next(c for c in verdict.checks if c.name.startswith(prefix))


# ---------------------------------------------------------------- learning dynamics


def test_weights_no_difference_is_minimal():
    v = learning_dynamics(four_stage(SAME, dict(SAME)))
    assert v.label == MINIMAL
    assert {c.outcome for c in v.checks} == {NO_CLEAR}
    assert v.evidence and all(e.interval is None for e in v.evidence)
    assert "SFT: sft (base→sft)" in v.comparison and "RLVR: rlvr (dpo→rlvr)" in v.comparison


def test_weights_clear_magnitude_difference():
    v = learning_dynamics(four_stage(SAME, {**SAME, "rel": 0.001}))
    assert v.label == CLEAR
    mag = check(v, "Magnitude")
    assert mag.outcome == CLEAR_UNDIRECTED and mag.hypothesis is None
    ratio = next(e for e in mag.evidence if e.metric.startswith("ratio"))
    assert ratio.value == pytest.approx(0.1)
    assert check(v, "Breadth").outcome == NO_CLEAR


def test_weights_reversal_of_a_hypothesis_is_unexpected():
    # W2 hypothesises that RLVR changes a larger share of entries; here it changes a fifth as many
    v = learning_dynamics(four_stage({**SAME, "changed": 0.9}, {**SAME, "changed": 0.18}))
    breadth = check(v, "Breadth")
    assert breadth.outcome == REVERSED and breadth.hypothesis == "W2"
    assert v.label == UNEXPECTED
    # the same data in the hypothesised direction is a clear difference, not unexpected
    v2 = learning_dynamics(four_stage({**SAME, "changed": 0.18}, {**SAME, "changed": 0.9}))
    assert check(v2, "Breadth").outcome == AS_HYPOTHESISED and v2.label == CLEAR


def test_weights_output_focus_and_attention():
    # SFT concentrates on the last layer and head (W1 as hypothesised); RLVR's attention moves 2× its MLP (W2)
    sft = {**SAME, "layer_scale": [1, 1, 1, 4], "head": 4}
    rl = {**SAME, "att": 2.0, "mlp": 1.0}
    s = four_stage(sft, rl)
    tr = Transitions(s)
    assert output_focus(tr, "base→sft") == pytest.approx(4.0)
    assert output_focus(tr, "dpo→rlvr") == pytest.approx(1.0)
    v = learning_dynamics(s)
    assert check(v, "Output-layer focus").outcome == AS_HYPOTHESISED
    assert check(v, "Attention vs MLP").outcome == AS_HYPOTHESISED
    assert v.label == CLEAR


def test_weights_without_sft_rlvr_pair_are_undirected():
    s = weights_summary(["x", "y", "z"], [{**SAME, "changed": 0.9}, {**SAME, "changed": 0.1}])
    v = learning_dynamics(s)
    assert "hypotheses are not tested" in v.comparison
    assert check(v, "Breadth").outcome == CLEAR_UNDIRECTED and v.label == CLEAR
    assert all(c.hypothesis is None for c in v.checks)


def test_not_measured_has_no_evidence():
    for v in (learning_dynamics(None), reasoning_behaviour(None), sample_efficiency(None), transfer(None)):
        assert v.label == NOT_MEASURED and v.evidence == [] and v.figure is None and v.table is None
        assert v.summary
    one_stage = weights_summary(["base", "sft"], [SAME])
    assert learning_dynamics(one_stage).label == NOT_MEASURED
    assert [v.label for v in all_verdicts(None, None)] == [NOT_MEASURED] * 4


# ---------------------------------------------------------------- reasoning behaviour


def test_behaviour_clear_none_and_reversal():
    m = neutral_metrics()
    # clear: accuracy +0.2 with a paired interval excluding 0
    better = behaviour_results({"sft": m, "rlvr": neutral_metrics(accuracy=est(0.7, 0.6, 0.8))},
                               {("sft", "rlvr"): zero_diffs(accuracy=est(0.2, 0.1, 0.3))})
    v = reasoning_behaviour(better)
    assert v.label == CLEAR and check(v, "Accuracy").outcome == CLEAR_UNDIRECTED
    paired = [e for e in check(v, "Accuracy").evidence if "paired" in e.metric]
    assert paired[0].value == 0.2 and paired[0].interval == (0.1, 0.3)
    # none: every interval contains 0
    same = behaviour_results({"sft": m, "rlvr": m}, {("sft", "rlvr"): zero_diffs()})
    assert reasoning_behaviour(same).label == MINIMAL
    # significant but below the stated size (0.05 for shares) is not clear
    tiny = behaviour_results({"sft": m, "rlvr": m}, {("sft", "rlvr"): zero_diffs(accuracy=est(0.01, 0.005, 0.015))})
    assert check(reasoning_behaviour(tiny), "Accuracy").outcome == NO_CLEAR
    # reversal: B2 hypothesises longer RLVR responses; they are 25% shorter, interval excludes 0
    shorter = behaviour_results({"sft": m, "rlvr": neutral_metrics(length_mean=est(150.0, 140.0, 160.0))},
                                {("sft", "rlvr"): zero_diffs(length_mean=est(-50.0, -60.0, -40.0))})
    v = reasoning_behaviour(shorter)
    length = check(v, "Response length")
    assert length.outcome == REVERSED and length.hypothesis == "B2" and v.label == UNEXPECTED
    # a relative effect below 10% of SFT's value is not clear even with an interval excluding 0
    slightly = behaviour_results({"sft": m, "rlvr": m}, {("sft", "rlvr"): zero_diffs(length_mean=est(-10.0, -15.0, -5.0))})
    assert check(reasoning_behaviour(slightly), "Response length").outcome == NO_CLEAR


def test_behaviour_unpaired_fallback_needs_disjoint_intervals():
    m = neutral_metrics()
    far = neutral_metrics(accuracy=est(0.8, 0.75, 0.85))
    near = neutral_metrics(accuracy=est(0.58, 0.5, 0.66))
    # sft and rlvr are not neighbours (dpo between) and no samples: no paired interval exists
    res = behaviour_results({"base": m, "sft": m, "dpo": m, "rlvr": far})
    c = check(reasoning_behaviour(res), "Accuracy")
    assert c.outcome == CLEAR_UNDIRECTED and "do not overlap" in c.rule
    res = behaviour_results({"base": m, "sft": m, "dpo": m, "rlvr": near})
    assert check(reasoning_behaviour(res), "Accuracy").outcome == NO_CLEAR


def test_behaviour_paired_difference_recomputed_from_samples():
    from ptlens.report.pairs import pair_differences

    res, rows = real_behaviour(["base", "sft", "dpo", "rlvr"], n_problems=8)
    extra = pair_differences(res, rows, [("sft", "rlvr")])
    d = extra[("sft", "rlvr")]["accuracy"]
    acc = res["models"]
    assert d["value"] == pytest.approx(acc["rlvr"]["metrics"]["accuracy"]["value"] - acc["sft"]["metrics"]["accuracy"]["value"])
    assert d["lo"] <= d["value"] <= d["hi"]
    # neighbours recomputed this way equal the stored paired differences
    again = pair_differences(res, rows, [("dpo", "rlvr")])[("dpo", "rlvr")]
    stored = next(c for c in res["consecutive"] if c["a"] == "dpo")["difference"]
    for metric in ("accuracy", "length_mean", "distinct_answers"):
        assert again[metric] == pytest.approx(stored[metric])
    v = reasoning_behaviour(res, extra_differences=extra)
    assert any("(paired)" in e.metric for e in check(v, "Accuracy").evidence)
    # model i answers correctly on i + 1 of 4 samples: rlvr − sft = +0.5 accuracy, every problem alike
    assert check(v, "Accuracy").outcome == CLEAR_UNDIRECTED


def test_pass_at_k_crossing():
    m = neutral_metrics()
    a = {**m, "pass@1": est(0.5), "pass@4": est(0.9), "pass@16": est(0.99)}
    b = {**m, "pass@1": est(0.6), "pass@4": est(0.85), "pass@16": est(0.9)}
    res = behaviour_results({"sft": a, "rlvr": b}, ks=(1, 4, 16))
    assert pass_at_k_crossings(res, "sft", "rlvr") == [4]


# ---------------------------------------------------------------- sample efficiency


def _facts(sft_examples=1000, rl_prompts=100):
    return [{"algorithm": "pretraining"}, {"algorithm": "SFT", "examples": sft_examples, "epochs": 2},
            {"algorithm": "DPO", "pairs": 500}, {"algorithm": "RLVR", "prompts": rl_prompts}]


def test_sample_efficiency_clear_minimal_missing():
    # per item: sft 0.02 / 1000 = 2e-5; rlvr 0.002 / 100 = 2e-5 → same rate
    s = four_stage({"rel": 0.02}, {"rel": 0.002}, facts=_facts())
    v = sample_efficiency(s)
    assert v.label == MINIMAL
    rows = {r.stage: r for r in efficiency_rows(s)}
    assert rows["sft"].per_item == pytest.approx(2e-5) and rows["sft"].per_pass == pytest.approx(1e-5)
    assert rows["rlvr"].item_field == "prompts"
    # 10× more change per prompt than per example
    v = sample_efficiency(four_stage({"rel": 0.02}, {"rel": 0.02}, facts=_facts()))
    assert v.label == CLEAR
    assert "different data" in v.criterion
    # no facts: not measured, and the reason says so
    v = sample_efficiency(four_stage({"rel": 0.02}, {"rel": 0.02}))
    assert v.label == NOT_MEASURED and "facts" in v.summary


# ---------------------------------------------------------------- transfer


@pytest.mark.parametrize("cos,label,word", [(0.3, CLEAR, "reinforces"), (-0.3, CLEAR, "partly undoes"),
                                            (0.02, MINIMAL, "")])
def test_transfer_reinforce_undo_or_unrelated(cos, label, word):
    s = four_stage({"rel": 0.02}, {"rel": 0.002}, cosines={(0, 1): 0.01, (1, 2): cos, (0, 2): 0.0})
    v = transfer(s)
    assert v.label == label
    c = check(v, "Direction: sft→dpo vs dpo→rlvr")
    assert word in c.name
    assert UNEXPECTED not in {x.label for x in [v]}


# ---------------------------------------------------------------- stages and trajectories


def test_roles_steps_and_pairs():
    assert role_of("sft") == "sft" and role_of("instruct", {"algorithm": "RLVR"}) == "rlvr"
    assert role_of("m2", {"algorithm": "SFT on DeepSeek-R1 samples (distillation)"}) == "sft"
    assert role_of("x", {"algorithm": "DPO (length-normalised)"}) == "dpo" and role_of("mystery") is None
    assert step_of("rlvr@step_200", "step_200") == ("step", 200) and step_of("rlvr#3") == ("ordinal", 3)
    lin = {"checkpoints": [{"label": "base", "name": "base"}, {"label": "sft", "name": "sft"},
                           {"label": "rlvr", "name": "rlvr@step_1"}, {"label": "rlvr", "name": "rlvr@step_2"}]}
    st = stages_of(lin)
    assert [s.label for s in st] == ["base", "sft", "rlvr"] and st[2].members == (2, 3) and st[2].start == 1
    a, b, hyp = comparison_pair(st)
    assert (a.label, b.label, hyp) == ("sft", "rlvr", True)


def test_trajectory_distance_exact_derived_and_bounded():
    names = ["base", "sft", "rlvr@step_100", "rlvr@step_200", "rlvr@step_300"]
    s = weights_summary(["base", "sft", "rlvr", "rlvr", "rlvr"],
                        [{"rel": 0.02}, {"rel": 0.003}, {"rel": 0.004}, {"rel": 0.001}],
                        cosines={(0, 1): 0.0, (1, 2): 0.5, (2, 3): 0.1}, names=names,
                        revisions=[None, None, "step_100", "step_200", "step_300"])
    (t,) = trajectories(s)
    assert t.stage == "rlvr" and t.start == "sft" and t.x_label == "optimizer step"
    assert [p.x for p in t.points] == [0, 100, 200, 300]
    # layer ‖W_A‖ = 1 each (4 layers) + head: ‖W‖ = √5; rel 0.003 means ‖Δ‖ = 0.003 √5
    p1, p2, p3 = t.points[1:]
    assert p1.distance == pytest.approx(0.003) and p1.distance_exact_from == "sft→rlvr@step_100"
    # ‖Δ1 + Δ2‖² = (.003² + .004² + 2·.5·.003·.004)·5 over ‖W‖² = 5
    assert p2.distance == pytest.approx((0.003 ** 2 + 0.004 ** 2 + 0.003 * 0.004) ** 0.5)
    assert p3.distance is None and p3.path_length == pytest.approx(0.008)
    assert p2.path_length == pytest.approx(0.007) and p2.path_length >= p2.distance
    # the stage's whole change is unknown (only its path length): the efficiency verdict says not measured
    facts = [{}, {"examples": 100}, {"prompts": 10}, {"prompts": 20}, {"prompts": 30}]
    s["lineage"]["checkpoints"] = [{**c, "facts": f} for c, f in zip(s["lineage"]["checkpoints"], facts)]
    v = sample_efficiency(s)
    assert v.label == NOT_MEASURED and "path length" in v.summary


def test_criteria_are_stated():
    text = " ".join(Criteria().text())
    for needle in ("95%", "excludes 0", "0.05", "10%", "2×", "1.5×", "0.1"):
        assert needle in text
    s = four_stage(SAME, SAME)
    for v in all_verdicts(s, behaviour_results({"sft": neutral_metrics(), "rlvr": neutral_metrics()})):
        assert v.criterion
        for c in v.checks:
            assert c.rule, c.name


def test_difference_check_missing_metric_is_not_measured():
    c = difference_check("x", "distinct_4", "a", {"value": None}, "b", est(0.5), None, Criteria(), False)
    assert c.outcome == NOT_MEASURED
