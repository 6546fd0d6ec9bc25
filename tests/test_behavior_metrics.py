"""Behaviour metrics against brute force and hand-computed values."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptlens.behavior import metrics as M


def brute_pass_at_k(correct: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


def brute_maj_at_k(keys: list[str], correct: list[bool], k: int) -> float:
    ok = M.cluster_correctness(keys, correct)
    total = 0.0
    subsets = list(itertools.combinations(range(len(keys)), k))
    for s in subsets:
        votes = Counter(keys[i] for i in s if keys[i])
        if not votes:
            continue
        best = max(votes.values())
        tied = [key for key, v in votes.items() if v == best]
        total += sum(ok[key] for key in tied) / len(tied)
    return total / len(subsets)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=10), st.data())
def test_pass_at_k_equals_enumeration_over_k_subsets(correct, data):
    k = data.draw(st.integers(1, len(correct)))
    got = M.pass_at_k(len(correct), sum(correct), k)
    assert got == pytest.approx(brute_pass_at_k(correct, k), abs=1e-12)


def test_pass_at_k_edges_and_large_n_is_stable():
    assert M.pass_at_k(16, 0, 4) == 0.0
    assert M.pass_at_k(16, 13, 4) == 1.0  # n - c = 3 < k
    assert M.pass_at_k(16, 1, 1) == pytest.approx(1 / 16)
    exact = 1 - math.comb(1024 - 3, 512) / math.comb(1024, 512)
    assert M.pass_at_k(1024, 3, 512) == pytest.approx(exact, rel=1e-12)
    with pytest.raises(ValueError):
        M.pass_at_k(4, 5, 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["", "1", "2", "3", "1/2"]), min_size=1, max_size=9), st.data())
def test_maj_at_k_equals_enumeration_over_k_subsets(keys, data):
    right = data.draw(st.sampled_from(["1", "2", "3", "1/2"]))
    correct = [key == right for key in keys]
    k = data.draw(st.integers(1, len(keys)))
    assert M.maj_at_k(keys, correct, k) == pytest.approx(brute_maj_at_k(keys, correct, k), abs=1e-12)


def test_maj_at_k_hand_computed():
    keys, correct = ["7", "7", "8"], [True, True, False]
    assert M.maj_at_k(keys, correct, 1) == pytest.approx(2 / 3)
    # pairs: {7,7} right; {7,8} twice, a tie split half-half → (1 + .5 + .5) / 3
    assert M.maj_at_k(keys, correct, 2) == pytest.approx(2 / 3)
    assert M.maj_at_k(keys, correct, 3) == 1.0
    # answers that are missing do not vote: the one real answer always wins
    assert M.maj_at_k(["", "", "5"], [False, False, True], 3) == 1.0
    assert M.maj_at_k(["", ""], [False, False], 1) == 0.0


def test_ece_and_brier_hand_computed():
    conf = [0.95, 0.85, 0.15, 0.55, 0.62, 0.68]
    right = [True, False, False, True, True, False]
    # bins 9, 8, 1, 5 hold one sample each; bin 6 holds two (accuracy .5, confidence .65)
    expected = (0.05 + 0.85 + 0.15 + 0.45 + 2 * 0.15) / 6
    assert M.ece(conf, right) == pytest.approx(expected)
    sq = [0.05 ** 2, 0.85 ** 2, 0.15 ** 2, 0.45 ** 2, 0.38 ** 2, 0.68 ** 2]
    assert M.brier(conf, right) == pytest.approx(sum(sq) / 6)
    assert M.ece([1.0], [True]) == 0.0  # confidence 1 falls in the last, closed bin
    bins = M.calibration_bins(conf, right)
    assert [b["count"] for b in bins] == [0, 1, 0, 0, 0, 1, 2, 0, 1, 1]


def test_distinct_n_hand_computed():
    texts = ["a b a", "a b"]
    assert M.distinct_n(texts, 1) == pytest.approx(2 / 5)
    assert M.distinct_n(texts, 2) == pytest.approx(2 / 3)
    assert M.distinct_n(texts, 3) == 1.0
    assert math.isnan(M.distinct_n(texts, 4))
    assert M.words("41+40=81.") == ["41", "+", "40", "=", "81", "."]


def test_answers_confidence_histogram_and_solved_sets():
    assert M.distinct_answers(["1", "1", "", "2"]) == 2
    assert M.modal_answer(["2", "1", "1", ""], [False, True, True, False]) == ("1", 0.5, True)
    assert M.modal_answer(["2", "1"], [False, True]) == ("2", 0.5, False)  # tie → first seen
    assert M.modal_answer(["", ""], [False, False]) == ("", 0.0, False)
    hist = M.accuracy_histogram([0, 0.05, 0.1, 0.15, 0.9, 0.95, 1.0, 1.0])
    assert hist["0"] == 1 and hist["(0.0,0.1]"] == 2 and hist["(0.1,0.2]"] == 1
    assert hist["(0.8,0.9]"] == 1 and hist["(0.9,1)"] == 1 and hist["1"] == 2
    assert sum(hist.values()) == 8 and len(hist) == 12
    sets = M.solved_sets({"p": True, "q": False, "r": True, "s": False}, {"p": True, "q": True, "r": False, "s": False})
    assert sets == {"a_only": ["r"], "b_only": ["q"], "both": ["p"], "neither": ["s"]}
    assert M.length_stats([1, 2, 10], [False, False, True]) == {"mean": pytest.approx(13 / 3), "median": 2.0,
                                                                "truncated": pytest.approx(1 / 3)}


def test_cross_ppl_and_kl():
    assert M.cross_ppl([-2.0, -4.0], [2, 2]) == pytest.approx(math.exp(1.5))
    assert M.cross_kl([0.5, 1.0], [2, 2]) == pytest.approx(3 / 8)  # Σ per-token KL sums ÷ tokens (tests/test_kl.py)


def _problem(pid, correct, keys=None, length=4, lp=-1.0):
    n = len(correct)
    keys = keys or [("1" if c else "2") for c in correct]
    return M.ProblemSamples(pid, list(correct), keys, ["x y"] * n, [length] * n, [False] * n, [lp * length] * n,
                            [0.5 * length] * n, {})


def test_bootstrap_intervals_are_seeded_paired_and_contain_the_value():
    rng = np.random.default_rng(1)
    a = [_problem(f"p{i}", list(rng.random(8) < 0.3)) for i in range(40)]
    b = [_problem(f"p{i}", list(rng.random(8) < 0.6)) for i in range(40)]
    r1 = M.compare_models({"a": a, "b": b}, n_boot=300, seed=3)
    r2 = M.compare_models({"a": a, "b": b}, n_boot=300, seed=3)
    assert r1 == r2
    acc = r1["models"]["a"]["metrics"]["accuracy"]
    assert acc["lo"] <= acc["value"] <= acc["hi"]
    assert acc["value"] == pytest.approx(np.mean([p.c / p.n for p in a]))
    diff = r1["consecutive"][0]["difference"]["accuracy"]
    assert diff["value"] == pytest.approx(r1["models"]["b"]["metrics"]["accuracy"]["value"] - acc["value"])
    assert diff["lo"] > 0  # b is clearly better on these problems
    same = M.compare_models({"a": a, "a2": a}, n_boot=100)
    d = same["consecutive"][0]["difference"]["pass@8"]
    assert d == {"value": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0}  # paired: identical models never differ
    assert r1["ks"] == [1, 2, 4, 8]


def test_compare_models_refuses_different_problem_sets():
    with pytest.raises(ValueError):
        M.compare_models({"a": [_problem("p", [True])], "b": [_problem("q", [True])]})


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=8), st.data())
def test_weighted_median_equals_median_of_repeated_values(values, data):
    w = np.array([data.draw(st.lists(st.integers(0, 3), min_size=len(values), max_size=len(values))) for _ in range(3)])
    w[:, 0] += 1
    v = np.array(values, dtype=float)
    assert list(M.weighted_median(v, w)) == [np.median(np.repeat(v, row)) for row in w]
