"""The overall decision: planted verdict sets land in each branch; the end-to-end one is in test_report_build.py."""

from __future__ import annotations

import json

from ptlens.report.decision import (INVESTIGATE, NOT_ENOUGH, SAVE, SCHEMA, SPEND, DecisionInputs, decide,
                                    decision_inputs, decision_rows)
from ptlens.report.verdicts import (AS_HYPOTHESISED, CLEAR, CLEAR_UNDIRECTED, DESCRIBED, DESCRIPTIVE, MINIMAL,
                                    NO_CLEAR, NOT_MEASURED, QUESTIONS, REVERSED, UNEXPECTED, Check, Verdict,
                                    limit_for, reasoning_behaviour, too_few_problems)

DYN, BEH, EFF, TRA = QUESTIONS


def _check(name, outcome, p=None, hyp=None):
    return Check(name, outcome, [], hyp, "rule", p, p)


def _verdicts(dyn=(), beh=(), dyn_label=None, beh_label=None):
    def label(checks, given):
        if given:
            return given
        o = [c.outcome for c in checks]
        return UNEXPECTED if REVERSED in o else CLEAR if {AS_HYPOTHESISED, CLEAR_UNDIRECTED} & set(o) else \
            MINIMAL if NO_CLEAR in o else NOT_MEASURED
    return [Verdict(DYN, label(dyn, dyn_label), "c", [], checks=list(dyn)),
            Verdict(BEH, label(beh, beh_label), "c", [], checks=list(beh)),
            Verdict(EFF, DESCRIPTIVE, "c", [], checks=[_check("per item", DESCRIBED)]),
            Verdict(TRA, "reinforces", "c", [], checks=[])]


BEH_MINIMAL = [_check("Accuracy (≈ pass@1)", NO_CLEAR, 0.4), _check("Response length", NO_CLEAR, 1.0, "B2")]
POWERED = DecisionInputs(pair=("sft", "rlvr"), n_problems=60, n_samples=16, power=0.95, has_weights=True,
                         has_behaviour=True, has_mechanism=True, parameters=8_000_000_000)


def test_clear_differences_spend():
    beh = [_check("Accuracy (≈ pass@1)", CLEAR_UNDIRECTED, 0.001), _check("Response length", AS_HYPOTHESISED, 0.01, "B2"),
           _check("Token entropy", NO_CLEAR, 0.3, "B3")]
    dyn = [_check("Breadth", AS_HYPOTHESISED, None, "W2"), _check("Magnitude", DESCRIBED)]
    inp = DecisionInputs(**{**POWERED.__dict__, "mechanism": ["sft→rlvr: carried by mlp"],
                            "top_problems": [("p3", 0.1, 0.9)]})
    d = decide(_verdicts(dyn, beh), inp)
    assert d.branch == SPEND and d.headline.startswith("Clear differences")
    assert [(c.check, c.sampled) for c in d.carried_by] == [("Accuracy (≈ pass@1)", True), ("Response length", True),
                                                            ("Breadth", False)]
    assert d.family_wise_error == 0.05 and "3 tested behaviour checks" in d.sureness
    assert "B2: Response length" in d.reason and "1 weight checks clear" in d.reason
    assert d.next_step.startswith("Design custom training")
    assert any("carried by mlp" in a for a in d.next_actions) and any("where sft and rlvr differ most: p3 (sft 10% → rlvr 90%)" in a for a in d.next_actions)
    assert d.scale_note is None  # 8B parameters
    assert d.verdicts == {"dynamics": CLEAR, "behaviour": CLEAR, "efficiency": DESCRIPTIVE, "transfer": "reinforces"}


def test_spend_without_weights_names_the_next_workflow_step():
    beh = [_check("Accuracy (≈ pass@1)", CLEAR_UNDIRECTED, 0.001)]
    d = decide(_verdicts((), beh, dyn_label=NOT_MEASURED),
               DecisionInputs(pair=("a", "b"), power=0.9, has_behaviour=True))
    assert d.branch == SPEND and d.next_step == "Deep weight analysis"
    assert d.next_actions[:2] == ["deep weight analysis: run ptlens weights (or ptlens run) on this lineage",
                                  "layer-specific analysis: run ptlens mechanism (or ptlens run) on this lineage"]


def test_minimal_differences_save_only_with_power():
    dyn = [_check("Breadth", CLEAR_UNDIRECTED)]  # the weights differ; behaviour does not
    d = decide(_verdicts(dyn, BEH_MINIMAL), POWERED)
    assert d.branch == SAVE and d.headline.startswith("Minimal differences")
    assert d.family_wise_error is None and "missed with probability ≈ 5%" in d.sureness
    assert "which alone does not spend" in d.reason and [c.outcome for c in d.carried_by] == [NO_CLEAR, NO_CLEAR]
    weak = DecisionInputs(**{**POWERED.__dict__, "power": 0.30, "problems_for_power": 42, "limit_for_power": 53,
                             "effect_for_power": 0.1, "held_out": 3})
    d = decide(_verdicts(dyn, BEH_MINIMAL), weak)
    assert d.branch == NOT_ENOUGH and "30% power" in d.reason
    assert d.next_actions == ["run with --limit 53: 42 problems × 16 samples give ≈ 80% power for an accuracy "
                              "difference of 0.1 (the limit also loads held-out problems, which are reported apart and not counted)"]


def test_minimal_at_the_floor_or_ceiling_is_not_enough():
    """No difference between models that both solve nothing (or everything) says the problems are out of reach, not
    that the stages behave alike: however powered, that is no reason to save the budget."""
    dyn = [_check("Breadth", CLEAR_UNDIRECTED)]
    for accs, where, hint in (((0.0, 0.013), "floor", "easier"), ((0.97, 1.0), "ceiling", "harder")):
        d = decide(_verdicts(dyn, BEH_MINIMAL), DecisionInputs(**{**POWERED.__dict__, "accuracies": accs}))
        assert d.branch == NOT_ENOUGH and f"at the {where}" in d.reason, d.reason
        assert d.next_actions[0].startswith(f"rerun on problems within reach: {hint}")
    within = decide(_verdicts(dyn, BEH_MINIMAL), DecisionInputs(**{**POWERED.__dict__, "accuracies": (0.04, 0.5)}))
    assert within.branch == SAVE


def test_minimal_without_a_tested_accuracy_check_is_not_enough():
    beh = [_check("Accuracy (≈ pass@1)", NOT_MEASURED), _check("Response length", NO_CLEAR, 0.5, "B2")]
    d = decide(_verdicts((), beh), POWERED)
    assert d.branch == NOT_ENOUGH and "accuracy check was not tested" in d.reason


def test_unexpected_patterns_investigate_from_either_question():
    beh = [_check("Accuracy (≈ pass@1)", CLEAR_UNDIRECTED, 0.001), _check("Token entropy", REVERSED, 0.004, "B3")]
    d = decide(_verdicts((), beh), POWERED)
    assert d.branch == INVESTIGATE and d.family_wise_error == 0.05
    assert [c.check for c in d.carried_by] == ["Token entropy"] and "B3: Token entropy" in d.reason
    dyn = [_check("Update complexity", REVERSED, None, "L1")]
    d = decide(_verdicts(dyn, BEH_MINIMAL), DecisionInputs(parameters=617_344, weight_layers=["t: layers 3"]))
    assert d.branch == INVESTIGATE and d.family_wise_error is None and "exact" in d.sureness
    assert d.scale_note and "617,344 parameters" in d.scale_note and "8B-scale" in d.scale_note


def test_not_enough_evidence_without_behaviour_or_with_too_few_problems():
    dyn = [_check("Breadth", CLEAR_UNDIRECTED)]
    d = decide(_verdicts(dyn, (), beh_label=NOT_MEASURED), DecisionInputs(has_weights=True))
    assert d.branch == NOT_ENOUGH and d.carried_by == [] and d.next_step == "Quick behavioural test"
    assert "no behaviour results" in d.reason and "alone decides nothing" in d.reason
    assert d.next_actions == ["run ptlens behavior (or ptlens run) on this lineage with this output folder"]
    few = Verdict(BEH, NOT_MEASURED, "c", [], summary="not measured: too few problems (9)")
    d = decide([_verdicts(dyn)[0], few], DecisionInputs(has_behaviour=True, limit_for_verdict=13))
    assert d.branch == NOT_ENOUGH and "is not measured: too few problems (9)" in d.reason
    assert d.next_actions == ["run with --limit 13 or more (a behaviour verdict needs ≥ 10 problems)"]
    rows = dict(decision_rows(d))
    assert rows["rule"].startswith("Derived only from the per-question verdicts") and "carried by" not in rows


def _results(n_loaded: int, held_every: int = 5) -> dict:
    """Behaviour results of a builtin run: every ``held_every``-th problem is held out (reported apart)."""
    problems = [{"id": f"p{i}", "tags": ["held-out" if i % held_every == held_every - 1 else "in-distribution"]}
                for i in range(n_loaded)]
    n = sum("in-distribution" in p["tags"] for p in problems)
    models = {m: {"n_problems": n, "metrics": {"accuracy": {"value": v}}} for m, v in (("sft", 0.4), ("rlvr", 0.6))}
    return {"models": models, "problems": problems, "settings": {"n_samples": 4},
            "headline_problems": {"n": n, "of": n_loaded, "excluded_tag": "held-out"},
            "lineage": {"checkpoints": [{"name": "sft", "label": "sft"}, {"name": "rlvr", "label": "rlvr"}]}}


def test_too_few_problems_says_what_was_excluded_and_a_limit_that_works():
    r = _results(11)  # --limit 11: 9 in-distribution + 2 held-out
    text = too_few_problems(r, 9, __import__("ptlens.report.verdicts", fromlist=["Criteria"]).Criteria())
    assert "9 of 11 loaded: the 2 held-out problems are reported apart" in text
    assert "run with --limit 12 or more" in text  # 12 loaded → 10 in-distribution (held out: the 5th and 10th)
    assert sum(i % 5 != 4 for i in range(12)) == 10 and sum(i % 5 != 4 for i in range(11)) == 9
    assert limit_for(r, 100) == 124 == 100 + 124 // 5 and limit_for({"headline_problems": {}}, 10) == 10
    odd = {**r, "problems": [{"tags": [t]} for t in ("held-out", "a", "a", "held-out", "a", "a", "a")]}
    assert limit_for(odd, 5) == 7 and limit_for(odd, 7) >= 10  # within the stored order; beyond it, no cycle
    v = reasoning_behaviour(r)
    assert v.label == NOT_MEASURED and "--limit 12" in v.summary


def test_decision_inputs_from_results_and_json_schema():
    r = _results(11)
    r["per_problem"] = {"sft": [{"id": "p0", "n": 4, "correct": 0}, {"id": "p1", "n": 4, "correct": 2}],
                        "rlvr": [{"id": "p0", "n": 4, "correct": 4}, {"id": "p1", "n": 4, "correct": 2}]}
    inp = decision_inputs(None, r)
    assert inp.pair == ("sft", "rlvr") and inp.n_problems == 9 and inp.held_out == 2
    assert abs(inp.accuracy_difference - 0.2) < 1e-12 and inp.effect_for_power == inp.accuracy_difference
    assert inp.top_problems == [("p0", 0.0, 1.0)]  # p1 does not differ
    from ptlens.report.calibration import design, design_of

    n, v = inp.problems_for_power, design_of(r, "sft").accuracy_variance
    assert v == (0 + 2 * 2 / (4 * 3)) / 2  # the run's own per-problem spread
    assert design(n, 4, inp.effect_for_power, accuracy_variance=v).power >= 0.8 > \
        design(n - 1, 4, inp.effect_for_power, accuracy_variance=v).power
    assert inp.limit_for_power == limit_for(r, n) and inp.limit_for_power > n
    d = decide(reasoning_behaviour(r) and _verdicts((), (), beh_label=NOT_MEASURED), inp)
    data = json.loads(json.dumps(d.to_json()))
    assert data["schema"] == SCHEMA == 1 and data["branch"] == NOT_ENOUGH
    assert data["inputs"]["pair"] == ["sft", "rlvr"] and data["verdicts"]["behaviour"] == NOT_MEASURED


def test_decision_end_to_end_on_the_shipped_lineage(tmp_path):
    """`ptlens run` on the embedded tiny lineage (small settings): the decision is in the console, report.md,
    report.html and verdicts.json, derived from the verdicts stored beside it, with the scale note next to it."""
    from typer.testing import CliRunner

    from ptlens.cli import app
    from ptlens.report.decision import BRANCHES, decide

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", "--output-dir", str(out), "--limit", "12", "--n-samples", "4",
                                   "--spectral", "off", "--engine", "hf", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report" / "verdicts.json").read_text())
    d = data["decision"]
    assert d["schema"] == SCHEMA and d["branch"] in BRANCHES
    assert d["verdicts"] == {k: v["label"] for k, v in zip(("dynamics", "behaviour", "efficiency", "transfer"),
                                                           data["verdicts"])}
    assert d["inputs"]["pair"] == ["sft", "rlvr"] and d["inputs"]["parameters"] == 617_344
    # the rule applied again to the stored verdicts gives the stored decision
    vs = [Verdict(v["question"], v["label"], v["criterion"], [], checks=[Check(**{**c, "evidence": []}) for c in v["checks"]])
          for v in data["verdicts"]]
    assert decide(vs, DecisionInputs(**{**d["inputs"], "pair": tuple(d["inputs"]["pair"]),
                                        "top_problems": [tuple(x) for x in d["inputs"]["top_problems"]]})).branch == d["branch"]
    md = (out / "report.md").read_text()
    head = md[:md.index("## Verdicts")]
    assert "## Decision" in head and f"**{d['branch'].upper()}**" in head and "**rule**: Derived only" in head
    assert "617,344 parameters" in head and "8B-scale" in head
    html = (out / "report.html").read_text()
    assert html.index('id="decision"') < html.index('id="verdicts"') and d["headline"] in html
    console = " ".join(res.output.split())
    assert f"Decision: {d['branch']}" in console and "rule: Derived only from the per-question verdicts" in console



TRICKY = ["rel_change and changed_exact", "_x_ *b* **c** `code` ``", "\\(a\\) \\[b\\] -> <- a > b", "<script>alert(1)</script>",
          "<img src=x onerror=\"t()\">", "&amp; &#35; & fish", "[link](http://example.com) ![i](x.png)", "a | b |",
          "~~gone~~ ~one~", "# not a heading", "1. not a list", "‖ΔW‖_F / ‖W_A‖_F, ≥ 1.5×", "<metric>_null",
          "C:\\path\\_x", "[ref] a [b][c] [d]: http://x [] [e][]", "0.5 [0.4, 0.6]"]


def test_markdown_escape_renders_as_the_text_and_reads_as_text():
    """esc() escapes only what Markdown reads: rendered by markdown-it (CommonMark + GFM tables and strikethrough),
    every string comes out as itself, in a paragraph and in a table cell; plain text keeps no needless escapes."""
    import html as H

    from markdown_it import MarkdownIt

    from ptlens.report.markdown import esc

    md = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    for t in TRICKY:
        para = md.render("x " + esc(t)).strip()
        assert para.startswith("<p>x ") and para.endswith("</p>"), (t, para)
        inner = para[len("<p>x "):-len("</p>")]
        assert "<" not in inner and H.unescape(inner) == t, (t, esc(t), para)  # no markup: the text itself
        cell = md.render(f"| h |\n|---|\n| {esc(t)} |\n")
        inner = cell[cell.index("<td>") + 4:cell.index("</td>")]
        assert "<" not in inner and H.unescape(inner) == t, (t, esc(t), cell)
    assert esc("a -> b (c) [0.4, 0.6] rel_change 95%") == "a -> b (c) [0.4, 0.6] rel_change 95%"
    assert esc("x\n  y") == "x y"


def _planted_decision(n_problems: int, n_samples: int, effect: float = 0.0, collapse_wrong: bool = False,
                      longer: float = 1.0, seed: int = 0):
    """A two-model lineage's graded samples with a planted effect, through the real pipeline: records →
    problem_samples → compare_models → the behaviour verdict → decision_inputs → decide."""
    import numpy as np

    from ptlens.behavior.metrics import compare_models
    from ptlens.behavior.samples import problem_samples
    from ptlens.report.calibration import simulate_records
    from ptlens.report.pairs import VERDICT_METRICS

    names = ("sft", "rlvr")
    recs = simulate_records(np.random.default_rng(seed), n_problems, n_samples, effect, names)
    for r in recs:
        if r.model != "rlvr":
            continue
        if collapse_wrong and not r.correct:  # every wrong answer the same one (fewer distinct answers: B1 reversed)
            r.answer_key = r.extracted = "7"
        if longer != 1.0:  # longer answers at the same per-token entropy (B2 as hypothesised)
            r.tokens = int(round(r.tokens * longer))
            r.entropy_sum *= longer
            r.logprob_sum *= longer
    ids = [f"p{i}" for i in range(n_problems)]
    metrics = compare_models(problem_samples(recs, names, ids), ks=sorted({1, n_samples}), n_boot=20, seed=seed,
                             n_perm=1000, only=VERDICT_METRICS)
    results = {"settings": {"n_samples": n_samples},
               "lineage": {"checkpoints": [{"label": n, "name": n} for n in names]}, **metrics}
    beh = reasoning_behaviour(results)
    verdicts = [Verdict(DYN, NOT_MEASURED, "c", []), beh, Verdict(EFF, NOT_MEASURED, "c", []),
                Verdict(TRA, NOT_MEASURED, "c", [])]
    return decide(verdicts, decision_inputs(None, results))


def test_planted_lineages_land_in_each_branch():
    """Spend on planted longer answers (a hypothesised direction, nothing reversed); save on the same model twice
    (60 × 16, within reach, powered); investigate when the later model's wrong answers collapse to one, and on a
    planted +0.3 accuracy gain, whose answers are fewer and more alike (the hypothesised diversity gain reversed, as
    the shipped lineage's GRPO shows); not enough evidence below the problems a verdict needs."""
    longer = _planted_decision(60, 8, longer=1.5)
    assert longer.branch == SPEND and "B2" in longer.reason, longer.reason
    gain = _planted_decision(60, 8, 0.3)
    assert gain.branch == INVESTIGATE and "B1" in gain.reason, gain.reason
    same = _planted_decision(60, 16, 0.0)
    assert same.branch == SAVE and same.inputs.power >= 0.8, (same.branch, same.reason)
    collapsed = _planted_decision(60, 16, 0.0, collapse_wrong=True)
    assert collapsed.branch == INVESTIGATE and "B1" in collapsed.reason, collapsed.reason
    few = _planted_decision(6, 16, 0.3)
    assert few.branch == NOT_ENOUGH and few.next_actions, few.reason
