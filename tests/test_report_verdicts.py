"""Verdict logic against constructed results with known answers: a clear difference, none, and a reversal."""

from __future__ import annotations

import pytest

from ptlens.report.stages import Transitions, comparison_pair, role_of, stages_of, step_of
from ptlens.report.trajectory import trajectories
from ptlens.report.verdicts import (AS_HYPOTHESISED, CLEAR, CLEAR_UNDIRECTED, DESCRIBED, DESCRIPTIVE, MINIMAL, MIXED,
                                    NO_CLEAR, NOT_MEASURED, REINFORCES, REVERSED, UNDOES, UNEXPECTED, UNRELATED,
                                    Criteria, all_verdicts, beyond_rounding, difference_check, efficiency_rows,
                                    learning_dynamics, output_focus, pass_at_k_crossings, reasoning_behaviour,
                                    sample_efficiency, transfer)
from test_report_helpers import (behaviour_results, est, four_stage, neutral_metrics, real_behaviour, weights_summary,
                                 zero_diffs)

SAME = {"rel": 0.01, "changed": 0.5, "stable_rank": 10.0, "principal_overlap": 0.8}


def check(verdict, prefix):
    return next(c for c in verdict.checks if c.name.startswith(prefix))


# ---------------------------------------------------------------- learning dynamics


def test_weights_no_difference_is_minimal():
    v = learning_dynamics(four_stage(SAME, dict(SAME)))
    assert v.label == MINIMAL
    assert {c.outcome for c in v.checks} == {NO_CLEAR, DESCRIBED}
    assert check(v, "Magnitude").outcome == DESCRIBED
    assert v.evidence and all(e.interval is None for e in v.evidence)
    assert "SFT: sft (base→sft)" in v.comparison and "RLVR: rlvr (dpo→rlvr)" in v.comparison
    assert "no null available" in v.summary


def test_magnitude_raw_or_per_unit_of_travel_is_descriptive():
    # RLVR moves the weights 10× less: with no learning rates and steps this is only described
    v = learning_dynamics(four_stage(SAME, {**SAME, "rel": 0.001}))
    mag = check(v, "Magnitude")
    assert mag.outcome == DESCRIBED and v.label == MINIMAL and "learning rate" in mag.rule
    ratio = next(e for e in mag.evidence if e.metric.startswith("ratio"))
    assert ratio.value == pytest.approx(0.1)
    # the same 10× with RLVR's learning rate × steps 10× smaller: shown per unit of travel (ratio 1)
    facts = [{}, {"learning_rate": 1e-5}, {}, {"learning_rate": 1e-6}]
    v = learning_dynamics(four_stage(SAME, {**SAME, "rel": 0.001}, facts=facts, steps=[None, 100, None, 100]))
    mag = check(v, "Magnitude per unit")
    assert mag.outcome == DESCRIBED
    assert next(e for e in mag.evidence if e.metric.startswith("ratio")).value == pytest.approx(1.0)
    # equal learning rate × steps: RLVR moves 10× less per unit of travel, shown but not decided on (no null, no
    # known false-alarm rate): it cannot make the verdict a clear difference on its own
    facts = [{}, {"learning_rate": 1e-6}, {}, {"learning_rate": 1e-6}]
    v = learning_dynamics(four_stage(SAME, {**SAME, "rel": 0.001}, facts=facts, steps=[None, 100, None, 100]))
    mag = check(v, "Magnitude per unit")
    assert mag.outcome == DESCRIBED and mag.hypothesis is None and v.label == MINIMAL
    assert next(e for e in mag.evidence if e.metric.startswith("ratio")).value == pytest.approx(0.1)
    assert any("lr × steps [sft] = 1e-06 × 100" in e.metric for e in mag.evidence) and "no null" in mag.rule


def test_weights_reversal_of_a_hypothesis_is_unexpected():
    # W2 hypothesises that RLVR changes a larger share of entries; here it changes a fifth as many
    v = learning_dynamics(four_stage({**SAME, "changed": 0.9}, {**SAME, "changed": 0.18}))
    breadth = check(v, "Breadth")
    assert breadth.outcome == REVERSED and breadth.hypothesis == "W2" and "no null available" in breadth.rule
    assert v.label == UNEXPECTED
    # the same data in the hypothesised direction is a clear difference, not unexpected
    v2 = learning_dynamics(four_stage({**SAME, "changed": 0.18}, {**SAME, "changed": 0.9}))
    assert check(v2, "Breadth").outcome == AS_HYPOTHESISED and v2.label == CLEAR


def test_weights_compare_excess_over_the_null():
    # RLVR changes a fifth as many entries as SFT, but an unstructured update of its (smaller) size would too:
    # relative to their nulls both stages are equally broad, so no difference (the raw ratio would say reversed)
    sft = {**SAME, "changed": 0.9, "changed_null": 0.9, "stable_rank_null": 20.0, "principal_overlap_null": 0.8}
    rl = {**SAME, "changed": 0.18, "changed_null": 0.2, "stable_rank_null": 20.0, "principal_overlap_null": 0.8}
    v = learning_dynamics(four_stage(sft, rl))
    breadth = check(v, "Breadth")
    assert breadth.outcome == NO_CLEAR and "divided by its null" in breadth.rule
    assert next(e for e in breadth.evidence if e.metric == "changed_exact ÷ null [rlvr]").value == pytest.approx(0.9)
    assert "no null available" not in v.summary
    # principal overlap is compared with its null, not with 1: 0.8 observed is chance when the null is 0.8;
    # RLVR at 0.4 against a null of 0.8 avoids principal weights twice as much as SFT
    rl2 = {**rl, "changed": 0.2, "principal_overlap": 0.4}
    po = check(learning_dynamics(four_stage(sft, rl2)), "Principal-weight overlap")
    assert po.outcome == CLEAR_UNDIRECTED
    assert next(e for e in po.evidence if e.metric.startswith("ratio")).value == pytest.approx(0.5)
    # sparse RLVR: a fifth of its null's share, SFT at its null → W2 reversed beyond the null
    rl3 = {**rl, "changed": 0.04}
    assert check(learning_dynamics(four_stage(sft, rl3)), "Breadth").outcome == REVERSED


def test_cast_only_transition_reads_no_change_beyond_rounding():
    # RLVR's "update" equals its null on every stored metric (a dtype cast): nothing beyond rounding
    sft = {**SAME, "changed": 0.9, "changed_null": 0.5, "stable_rank": 3.0, "stable_rank_null": 20.0}
    cast = {**SAME, "changed": 0.3, "changed_null": 0.3, "stable_rank": 20.0, "stable_rank_null": 20.0,
            "principal_overlap": 0.8, "principal_overlap_null": 0.8}
    s = four_stage(sft, cast)
    assert beyond_rounding(Transitions(s), "dpo→rlvr") is False and beyond_rounding(Transitions(s), "base→sft") is True
    v = learning_dynamics(s)
    assert v.label == MINIMAL and "rlvr: no change beyond rounding" in v.summary
    assert all(c.outcome in (NO_CLEAR, DESCRIBED) for c in v.checks)
    # no stored value changed at all (compared in the coarser dtype): also nothing beyond rounding
    assert beyond_rounding(Transitions(four_stage(sft, {**SAME, "changed": 0.0})), "dpo→rlvr") is False
    # without nulls nothing tells
    assert beyond_rounding(Transitions(four_stage(SAME, SAME)), "dpo→rlvr") is None


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
    assert "hypotheses (from the user's analysis plan) are not tested" in v.comparison
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
    # clear: accuracy +0.2, p = 0.001 → Holm over 8 checks: 0.008 ≤ 0.05
    better = behaviour_results({"sft": m, "rlvr": neutral_metrics(accuracy=est(0.7, 0.6, 0.8))},
                               {("sft", "rlvr"): zero_diffs(accuracy=est(0.2, 0.1, 0.3, p=0.001))})
    v = reasoning_behaviour(better)
    acc = check(v, "Accuracy")
    assert v.label == CLEAR and acc.outcome == CLEAR_UNDIRECTED
    assert acc.p == 0.001 and acc.p_adjusted == pytest.approx(0.008)
    paired = [e for e in acc.evidence if "paired" in e.metric]
    assert paired[0].value == 0.2 and paired[0].interval == (0.1, 0.3)
    # none: every p is 1
    same = behaviour_results({"sft": m, "rlvr": m}, {("sft", "rlvr"): zero_diffs()})
    assert reasoning_behaviour(same).label == MINIMAL
    # significant alone (p = 0.01) but not after Holm over 8 checks (0.08 > 0.05): not clear
    alone = behaviour_results({"sft": m, "rlvr": m}, {("sft", "rlvr"): zero_diffs(accuracy=est(0.2, 0.1, 0.3, p=0.01))})
    c = check(reasoning_behaviour(alone), "Accuracy")
    assert c.outcome == NO_CLEAR and c.p_adjusted == pytest.approx(0.08) and "Holm-adjusted over 8 checks" in c.rule
    # significant but below the stated size (0.05 for shares) is not clear
    tiny = behaviour_results({"sft": m, "rlvr": m}, {("sft", "rlvr"): zero_diffs(accuracy=est(0.01, 0.005, 0.015, p=1e-4))})
    assert check(reasoning_behaviour(tiny), "Accuracy").outcome == NO_CLEAR
    # reversal: B2 hypothesises longer RLVR responses; they are 25% shorter, p tiny
    shorter = behaviour_results({"sft": m, "rlvr": neutral_metrics(length_mean=est(150.0, 140.0, 160.0))},
                                {("sft", "rlvr"): zero_diffs(length_mean=est(-50.0, -60.0, -40.0, p=1e-4))})
    v = reasoning_behaviour(shorter)
    length = check(v, "Response length")
    assert length.outcome == REVERSED and length.hypothesis == "B2" and v.label == UNEXPECTED
    # a relative effect below 10% of SFT's value is not clear even when the test rejects
    slightly = behaviour_results({"sft": m, "rlvr": m},
                                 {("sft", "rlvr"): zero_diffs(length_mean=est(-10.0, -15.0, -5.0, p=1e-4))})
    assert check(reasoning_behaviour(slightly), "Response length").outcome == NO_CLEAR


def test_behaviour_needs_enough_problems_and_a_stored_test():
    m = neutral_metrics()
    d = {("sft", "rlvr"): zero_diffs(accuracy=est(0.3, 0.2, 0.4, p=1e-4))}
    few = reasoning_behaviour(behaviour_results({"sft": m, "rlvr": m}, d, n_problems=6))
    assert few.label == NOT_MEASURED and "too few problems (6" in few.summary and "≥ 10" in few.summary
    assert reasoning_behaviour(behaviour_results({"sft": m, "rlvr": m}, d, n_problems=10)).label == CLEAR
    # sft and rlvr are not neighbours (dpo between) and no samples: no paired test exists, so no verdict, even
    # with the models' own intervals far apart
    far = neutral_metrics(accuracy=est(0.9, 0.85, 0.95))
    v = reasoning_behaviour(behaviour_results({"base": m, "sft": m, "dpo": m, "rlvr": far}))
    assert check(v, "Accuracy").outcome == NOT_MEASURED and "no paired test" in check(v, "Accuracy").rule
    assert v.label == NOT_MEASURED
    # stored differences of an older ptlens (interval, no p): not measured either
    old = behaviour_results({"sft": m, "rlvr": far}, {("sft", "rlvr"): {k: est(0.4, 0.3, 0.5) for k in m}})
    assert reasoning_behaviour(old).label == NOT_MEASURED


def test_behaviour_paired_difference_recomputed_from_samples():
    from ptlens.report.pairs import pair_differences

    res, rows = real_behaviour(["base", "sft", "dpo", "rlvr"], n_problems=12)
    extra = pair_differences(res, rows, [("sft", "rlvr")])
    d = extra[("sft", "rlvr")]["accuracy"]
    acc = res["models"]
    assert d["value"] == pytest.approx(acc["rlvr"]["metrics"]["accuracy"]["value"] - acc["sft"]["metrics"]["accuracy"]["value"])
    assert d["lo"] <= d["value"] <= d["hi"]
    # every problem alike and rlvr better on each: only the unswapped and fully swapped patterns reach |T_obs|,
    # 2 of the 4096; 2000 random patterns hit them about once: p = (1 + hits) / 2001
    assert d["p"] < 0.005
    # neighbours recomputed this way equal the stored paired differences, p-values included
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


def test_sample_efficiency_descriptive_across_kinds_compared_within_one_kind():
    # per item: sft 0.02 / 1000 examples = 2e-5; rlvr 0.02 / 100 prompts = 2e-4: examples and prompts differ in kind,
    # so the 10× is described, never a clear difference
    s = four_stage({"rel": 0.02}, {"rel": 0.02}, facts=_facts())
    v = sample_efficiency(s)
    assert v.label == DESCRIPTIVE and v.checks[0].outcome == DESCRIBED and "different kinds" in v.checks[0].rule
    rows = {r.stage: r for r in efficiency_rows(s)}
    assert rows["sft"].per_item == pytest.approx(2e-5) and rows["sft"].per_pass == pytest.approx(1e-5)
    assert rows["rlvr"].item_field == "prompts" and rows["rlvr"].per_item == pytest.approx(2e-4)
    assert "different data" in v.criterion
    # items of one kind (prompts, say two RL stages): compared, 10× is clear, 1× is minimal
    labels = ["base", "sft", "rlvr"]
    two_rl = [{}, {"algorithm": "GRPO", "prompts": 1000}, {"algorithm": "GRPO", "prompts": 100}]
    assert sample_efficiency(weights_summary(["base", "rl1", "rl2"], [{"rel": 0.02}, {"rel": 0.02}], facts=two_rl)).label == CLEAR
    assert sample_efficiency(weights_summary(["base", "rl1", "rl2"], [{"rel": 0.02}, {"rel": 0.002}], facts=two_rl)).label == MINIMAL
    assert labels  # (sft vs rlvr needs an SFT stage; two RL stages compare first and last)
    # no facts: not measured, and the reason says so
    v = sample_efficiency(four_stage({"rel": 0.02}, {"rel": 0.02}))
    assert v.label == NOT_MEASURED and "facts" in v.summary


# ---------------------------------------------------------------- transfer


@pytest.mark.parametrize("cos,label,word", [(0.3, REINFORCES, "reinforces"), (-0.3, UNDOES, "undoes"),
                                            (0.02, UNRELATED, "unrelated")])
def test_transfer_reinforce_undo_or_unrelated(cos, label, word):
    s = four_stage({"rel": 0.02}, {"rel": 0.002}, cosines={(0, 1): cos, (1, 2): cos, (0, 2): cos})
    v = transfer(s)
    assert v.label == label
    c = check(v, "Direction: dpo→rlvr after sft→dpo")
    assert c.outcome == label and word in c.name and "chance level" in c.rule
    assert UNEXPECTED != v.label and CLEAR != v.label
    # the first and the last stage are compared too (does RLVR continue SFT?)
    assert check(v, "Direction: dpo→rlvr after base→sft").outcome == label


def test_transfer_mixed_and_chance_level():
    s = four_stage({"rel": 0.02}, {"rel": 0.002}, cosines={(0, 1): 0.3, (1, 2): -0.3, (0, 2): 0.0})
    v = transfer(s)
    assert v.label == MIXED and "1 reinforces; 1 undoes; 1 unrelated" in v.summary
    # 400 parameters: independent updates reach |cos| ~ 4/√400 = 0.2 by chance, so 0.15 is unrelated
    s = four_stage({"rel": 0.02, "entries": 400}, {"rel": 0.002, "entries": 400}, dpo={"rel": 0.005, "entries": 400},
                   cosines={(0, 1): 0.15, (1, 2): 0.15, (0, 2): 0.15})
    c = check(transfer(s), "Direction: dpo→rlvr after sft→dpo")
    assert c.outcome == UNRELATED
    assert next(e for e in c.evidence if e.metric.startswith("chance")).value == pytest.approx(0.2)


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


def test_stage_spans_are_whole_stages_for_every_question():
    # sft × 1 then rlvr × 3: RLVR is measured from sft to its last checkpoint, never by its first step alone
    names = ["base", "sft", "rlvr@step_100", "rlvr@step_200", "rlvr@step_300"]
    kw = dict(names=names, revisions=[None, None, "step_100", "step_200", "step_300"],
              facts=[{}, {"examples": 1000}, {"prompts": 10}, {"prompts": 20}, {"prompts": 30}])
    steps = [{"rel": 0.02, "changed": 0.9}, {"rel": 0.001, "changed": 0.1}, {"rel": 0.001, "changed": 0.1},
             {"rel": 0.001, "changed": 0.1}]
    old = weights_summary(["base", "sft", "rlvr", "rlvr", "rlvr"], steps, cosines={(0, 1): 0.0}, **kw)
    tr = Transitions(old)
    st = stages_of(old["lineage"])
    assert tr.stage_transition(st[2]) is None  # not stored: a part (sft→rlvr@step_100) does not stand in
    v = learning_dynamics(old)
    assert v.label == NOT_MEASURED and "no whole-stage transition" in v.summary and "rlvr" in v.summary
    assert transfer(old).label == NOT_MEASURED
    # a scan that stores the stage span sft → rlvr@step_300 (kind "stage")
    new = weights_summary(["base", "sft", "rlvr", "rlvr", "rlvr"], steps, cosines={(0, 1): 0.0},
                          spans={(1, 4): {"rel": 0.0025, "changed": 0.25}},
                          span_cosines={("base→sft", "sft→rlvr@step_300"): -0.4}, **kw)
    tr = Transitions(new)
    assert tr.stage_transition(stages_of(new["lineage"])[2]) == "sft→rlvr@step_300"
    v = learning_dynamics(new)
    assert "RLVR: rlvr (sft→rlvr@step_300)" in v.comparison
    breadth = check(v, "Breadth")
    assert next(e for e in breadth.evidence if e.metric == "changed_exact [rlvr]").value == 0.25
    eff = {r.stage: r for r in efficiency_rows(new)}
    assert eff["rlvr"].transition == "sft→rlvr@step_300" and eff["rlvr"].rel_change == pytest.approx(0.0025)
    t = transfer(new)
    assert t.label == UNDOES and check(t, "Direction: sft→rlvr@step_300 after base→sft").outcome == UNDOES
    # trajectories measure from the same stage start
    (traj,) = trajectories(new)
    assert traj.start == "sft" and traj.points[-1].distance == pytest.approx(0.0025)
    assert traj.points[-1].distance_exact_from == "sft→rlvr@step_300"


def test_scan_stores_stage_spans_and_their_cosines():
    from ptlens.weights.plan import delta_pairs_for, stage_spans, transitions_for

    labels = ["base", "sft", "rlvr", "rlvr", "rlvr"]
    names = ["base", "sft", "r1", "r2", "r3"]
    assert stage_spans(labels) == [(0, 1), (1, 4)]
    ts = transitions_for(names, labels)
    assert [(t.name, t.kind) for t in ts if t.kind == "stage"] == [("sft→r3", "stage")]
    assert len({(t.a, t.b) for t in ts}) == len(ts)  # no duplicates
    pairs = {(ts[i].name, ts[j].name) for i, j in delta_pairs_for(ts, labels)}
    assert ("base→sft", "sft→r3") in pairs and ("sft→r1", "r1→r2") in pairs
    # one checkpoint per stage: the spans are the consecutive transitions, nothing is added
    four = ["base", "sft", "dpo", "rlvr"]
    assert [t.kind for t in transitions_for(four, four)] == [t.kind for t in transitions_for(four)]
    assert delta_pairs_for(transitions_for(four, four), four) == delta_pairs_for(transitions_for(four))


def test_criteria_are_stated():
    text = " ".join(Criteria().text())
    for needle in ("sign-flip", "Holm", "family-wise error 0.05", "at least 10 problems", "0.05", "10%", "2×", "1.5×",
                   "0.1", "_null", "descriptive", "learning rate × steps", "reinforces", "undoes", "unrelated", "4/√n", "N(0, 1/n)"):
        assert needle in text, needle
    s = four_stage(SAME, SAME)
    for v in all_verdicts(s, behaviour_results({"sft": neutral_metrics(), "rlvr": neutral_metrics()})):
        assert v.criterion
        for c in v.checks:
            assert c.rule, c.name


def test_difference_check_missing_metric_is_not_measured():
    c = difference_check("x", "distinct_4", "a", {"value": None}, "b", est(0.5), None, Criteria(), False)
    assert c.outcome == NOT_MEASURED


def test_pairs_not_computed_say_why():
    """A pair whose samples are missing is not silently dropped: pair_differences_why names the model and problem."""
    from ptlens.report.pairs import pair_differences_why

    res, rows = real_behaviour(["base", "sft", "dpo", "rlvr"], n_problems=12)
    pid = res["problems"][3]["id"]
    cut = [r for r in rows if not (r["model"] == "rlvr" and r["problem_id"] == pid)]
    out, why = pair_differences_why(res, cut, [("sft", "rlvr"), ("base", "sft"), ("sft", "nobody")])
    assert list(out) == [("base", "sft")]
    assert why == {("sft", "rlvr"): f"no samples of rlvr for problem {pid} in behavior/samples.jsonl",
                   ("sft", "nobody"): "no samples of nobody in behavior/samples.jsonl"}
