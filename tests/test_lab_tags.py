"""In-distribution vs held-out problems: builtin tags, per-tag accuracy, the headline subset, and the report table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ptlens.behavior.metrics import ProblemSamples, accuracy_by_tag, compare_models, headline_indices, pass_at_k
from ptlens.behavior.problems import DEFAULT_LEVELS, HELD_OUT, IN_DISTRIBUTION, builtin_problems, load_problems


def _ps(pid: str, correct: list[bool]) -> ProblemSamples:
    n = len(correct)
    return ProblemSamples(pid, correct, [str(c) for c in correct], ["x"] * n, [3] * n, [False] * n, [-1.0] * n, [0.5] * n)


def test_builtin_default_mixes_trained_levels_and_a_held_out_level_four_to_one():
    ps = load_problems("builtin", 60)
    assert [p.level for p in ps[:5]] == list(DEFAULT_LEVELS)
    assert sum(IN_DISTRIBUTION in p.tags for p in ps) == 48 and sum(HELD_OUT in p.tags for p in ps) == 12
    for p in ps:
        assert p.tags == (f"level{p.level}", HELD_OUT if p.level == 3 else IN_DISTRIBUTION)
    assert load_problems("builtin", 10) == ps[:10]  # still a prefix of the same list
    assert all(p.tags == ("level1", IN_DISTRIBUTION) for p in builtin_problems(5, levels=(1,)))


def test_jsonl_tags_are_read_and_checked(tmp_path):
    from ptlens.errors import PtlensError

    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": "a", "question": "1+1?", "answer": "2", "tags": ["easy", "held-out"]}) + "\n")
    assert load_problems(str(f))[0].tags == ("easy", "held-out")
    f.write_text(json.dumps({"id": "a", "question": "1+1?", "answer": "2", "tags": "easy"}) + "\n")
    with pytest.raises(PtlensError, match="line 1: tags"):
        load_problems(str(f))


def test_headline_leaves_out_held_out_only_when_both_kinds_are_present():
    assert headline_indices([("a", IN_DISTRIBUTION), ("b", HELD_OUT), ("c", IN_DISTRIBUTION)]) == [0, 2]
    assert headline_indices([("b", HELD_OUT), ("b", HELD_OUT)]) == [0, 1]
    assert headline_indices([(), ()]) == [0, 1]


def test_accuracy_by_tag_equals_hand_counts_and_pairs_differences():
    tags = [("level1", IN_DISTRIBUTION), ("level2", IN_DISTRIBUTION), ("level3", HELD_OUT), ("level3", HELD_OUT)]
    a = [_ps("p0", [True, True, False, False]), _ps("p1", [True, False, False, False]),
         _ps("p2", [False] * 4), _ps("p3", [True, False, False, False])]
    b = [_ps("p0", [True] * 4), _ps("p1", [True, True, True, False]), _ps("p2", [False] * 4), _ps("p3", [False] * 4)]
    out = accuracy_by_tag({"sft": a, "rlvr": b}, tags, ks=[2], n_boot=400, seed=1)
    assert list(out) == [IN_DISTRIBUTION, HELD_OUT, "level1", "level2", "level3"]
    ind, held = out[IN_DISTRIBUTION], out[HELD_OUT]
    assert ind["n_problems"] == 2 and held["n_problems"] == 2
    assert ind["models"]["sft"]["accuracy"]["value"] == pytest.approx(3 / 8)
    assert ind["models"]["rlvr"]["accuracy"]["value"] == pytest.approx(7 / 8)
    assert held["models"]["sft"]["accuracy"]["value"] == pytest.approx(1 / 8)
    assert ind["models"]["sft"]["pass@2"]["value"] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2)
    d = ind["consecutive"][0]
    assert (d["a"], d["b"]) == ("sft", "rlvr")
    assert d["difference"]["accuracy"]["value"] == pytest.approx(0.5)
    assert 0 < d["difference"]["accuracy"]["lo"] <= 0.5 <= d["difference"]["accuracy"]["hi"]  # rlvr better on both
    assert held["consecutive"][0]["difference"]["accuracy"]["value"] == pytest.approx(-1 / 8)
    # the in-distribution entry is the headline of compare_models over the same problems
    head = compare_models({"sft": a[:2], "rlvr": b[:2]}, ks=[2], n_boot=400, seed=1)
    assert head["models"]["rlvr"]["metrics"]["accuracy"]["value"] == ind["models"]["rlvr"]["accuracy"]["value"]


def test_accuracy_by_tag_interval_covers_the_truth_at_the_stated_rate():
    """Simulated problems with a known accuracy: the 95% interval of each tag covers it ~95% of the time."""
    rng = np.random.default_rng(0)
    covered = 0
    trials = 60
    for t in range(trials):
        probs = rng.uniform(0.2, 0.9, size=40)
        samples = [_ps(f"p{i}", list(rng.random(8) < q)) for i, q in enumerate(probs)]
        tags = [("x",)] * 40
        est = accuracy_by_tag({"m": samples}, tags, n_boot=300, seed=t)["x"]["models"]["m"]["accuracy"]
        covered += est["lo"] <= 0.55 <= est["hi"]  # population mean of uniform(0.2, 0.9)
    assert covered / trials >= 0.85


def test_report_shows_accuracy_by_tag_beside_the_headline():
    from ptlens.report.sections import behaviour_section
    from ptlens.results.store import BehaviorResults

    tags = [("level1", IN_DISTRIBUTION), ("level3", HELD_OUT)]
    a, b = [_ps("p0", [True, False]), _ps("p1", [False, False])], [_ps("p0", [True, True]), _ps("p1", [True, False])]
    r = compare_models({"sft": a[:1], "rlvr": b[:1]}, n_boot=100)
    r["by_tag"] = accuracy_by_tag({"sft": a, "rlvr": b}, tags, n_boot=100)
    r["headline_problems"] = {"n": 1, "of": 2, "excluded_tag": HELD_OUT}
    r["settings"] = {"n_samples": 2}
    sec = behaviour_section(BehaviorResults.from_dict(r), {})
    by_tag = next(t for t in sec["tables"] if t["id"] == "tbl-behaviour-by-tag")
    assert by_tag["header"][:4] == ["tag", "problems", "sft", "rlvr"] and by_tag["header"][-1] == "rlvr − sft"
    rows = {row[0]: row for row in by_tag["rows"]}
    assert rows[IN_DISTRIBUTION][2][0] == "0.5" and rows[HELD_OUT][3][0] == "0.5"
    assert "held-out problems left out: 1" in sec["tables"][0]["note"]
