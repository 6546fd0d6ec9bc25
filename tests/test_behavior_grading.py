"""Grading of tricky answers, answer clustering, and the problem sources."""

from __future__ import annotations

import json
import threading

import pytest

from ptlens.behavior.extraction import extract_answer
from ptlens.behavior.grading import Grade, answer_key, grade
from ptlens.behavior.problems import Problem, builtin_problems, jsonl_problems, load_problems
from ptlens.errors import PtlensError

# Conventions (docs/GRADING.md). Where one comes from elsewhere it says so:
#   MV-BOXED   math-verify LatexExtractionConfig(boxed_match_priority=0): a \boxed{} answer comes first; of several
#              the last wins (math-verify's boxed="last" normalisation of a boxed match)
#   BOX-UNITS  ptlens: \text{}, units, degrees, currency and percent inside the answer are dropped
#   UNICODE    ptlens: NFKC + minus/dash map + every script's digits to ASCII, superscripts to ^{}
#   GSM8K      lm-evaluation-harness gsm8k "strict-match": regex `#### (\-?[0-9\.\,]+)`, last match
#   ANSWER-IS  math-verify's "answer" anchors / lm-eval minerva_math "The final answer is X. I hope it is correct."
#   LAST-EQ    ptlens: an expression after "=" at the end of the last non-empty line
#   NO-STATE   ptlens: no stated final answer → no answer; unlike lm-eval's "flexible-extract" (last number anywhere)
#   ONLY-NUM   ptlens: a response that is one number states it
#   MV-EQUIV   math-verify verify(): symbolic equivalence of the canonical answer and the gold
#   LAST-STATED ptlens (as math-verify, whose rightmost match wins): the last stated answer by position, whatever its
#              form; a box beats the anchor it sits in; several boxes joined by , / and / or are a set when the gold is
TABLE = [
    # response, gold, correct, extracted (None: nothing found; ... : not checked), convention
    (r"\boxed{5}, no wait, \boxed{3}", "3", True, "3", "MV-BOXED"),
    (r"\boxed{5}, no wait, \boxed{3}", "5", False, "3", "MV-BOXED"),
    ("2 * 5 = 10\n10 + 3 = 13\n\\boxed{13}\n\\boxed{12}", "13", False, "12", "MV-BOXED"),
    (r"So the result is \boxed{\frac{1}{2}}.", "0.5", True, r"\frac{1}{2}", "MV-BOXED"),
    (r"\boxed{\dfrac{3}{4}}", r"\frac34", True, ..., "MV-BOXED"),
    (r"x = \boxed{\sqrt{2}}", r"\sqrt{2}", True, r"\sqrt{2}", "MV-BOXED"),
    (r"\boxed{8}", "7", False, "8", "MV-BOXED"),
    (r"\boxed{ 12 }", "12", True, "12", "MV-BOXED"),
    (r"\fbox{7}", "7", True, "7", "MV-BOXED"),
    (r"\boxed{}  The answer is 4", "4", True, "4", "MV-BOXED"),
    (r"The answer is \boxed{7", "7", False, "\\boxed{7", "MV-BOXED"),  # a box never closed: cut off
    (r"\boxed{7", "7", False, None, "MV-BOXED"),
    (r"$\boxed{0.5}$", r"\frac{1}{2}", True, "0.5", "MV-BOXED"),
    (r"\boxed{-3}", "3", False, "-3", "MV-BOXED"),
    (r"\boxed{\text{3 apples}}", "3", True, ..., "BOX-UNITS"),
    (r"\boxed{5\text{ cm}}", "5", True, ..., "BOX-UNITS"),
    (r"\boxed{12 \text{ dollars}}", "12", True, ..., "BOX-UNITS"),
    (r"\boxed{45^\circ}", "45", True, ..., "BOX-UNITS"),
    (r"\boxed{x = 3}", "3", True, "x = 3", "BOX-UNITS"),
    (r"\boxed{\$1,000}", "1000", True, "1000", "BOX-UNITS"),
    (r"\boxed{1,000}", "1000", True, "1000", "BOX-UNITS"),
    (r"\boxed{50\%}", "50", True, ..., "BOX-UNITS"),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", True, ..., "BOX-UNITS"),
    (r"\boxed{\text{3 apples}}", "4", False, ..., "BOX-UNITS"),
    ("The answer is −3.", "3", False, "-3", "UNICODE"),
    ("The answer is −3.", "-3", True, "-3", "UNICODE"),
    ("The result is −3.", "3", False, None, "UNICODE"),
    ("The answer is ３", "3", True, "3", "UNICODE"),
    ("The answer is ٣", "3", True, "3", "UNICODE"),
    ("The answer is ३७", "37", True, "37", "UNICODE"),
    ("\\boxed{–5}", "-5", True, "-5", "UNICODE"),
    ("The answer is ½", "1/2", True, "1/2", "UNICODE"),
    ("The answer is 3²", "9", True, "3^{2}", "UNICODE"),
    ("The answer is 2π", r"2\pi", True, ..., "UNICODE"),
    ("The answer is −\\frac{1}{2}", "-0.5", True, ..., "UNICODE"),
    ("#### −4", "-4", True, "-4", "UNICODE"),
    ("3 + 4 = 7\n#### 7", "7", True, "7", "GSM8K"),
    ("#### 1,234", "1234", True, "1234", "GSM8K"),
    ("#### 5\nWait, 6", "5", True, "5", "GSM8K"),
    ("#### 12\n#### 13", "13", True, "13", "GSM8K"),
    ("The answer is **73**", "73", True, "73", "ANSWER-IS"),
    ("The answer is 1,000.", "1,000", True, "1000", "ANSWER-IS"),
    ("the answer is 7. Then again 8", "7", True, "7", "ANSWER-IS"),
    ("The final answer is $\\frac{1}{2}$. I hope it is correct.", "0.5", True, r"\frac{1}{2}", "ANSWER-IS"),
    ("Answer: 42", "42", True, "42", "ANSWER-IS"),
    ("Answer: \\$12", "12", True, "12", "ANSWER-IS"),
    ("The answer is 50%.", "50", True, ..., "ANSWER-IS"),
    ("The answer is 12 apples.", "12", True, ..., "ANSWER-IS"),
    ("The answer is -3", "-3", True, "-3", "ANSWER-IS"),
    ("I think the answer is 4, but the answer is 5.", "5", True, "5", "ANSWER-IS"),
    ("The answer is x = 3.", "3", True, "x = 3", "ANSWER-IS"),
    ("The answer is 3, since 1 + 2 = 3.", "3", True, "3", "ANSWER-IS"),
    ("The answer is $\\frac{3}{4}$ so that works", "0.75", True, r"\frac{3}{4}", "ANSWER-IS"),
    ("Answer:\n42", "42", True, "42", "ANSWER-IS"),
    ("41 + 40 = 81", "81", True, "81", "LAST-EQ"),
    ("41 + 40 = 81.", "81", True, "81", "LAST-EQ"),
    ("Step 1: 2 + 2 = 4\nSo x = 3", "3", True, "3", "LAST-EQ"),
    ("3 * 4 = 12 apples", "12", True, ..., "LAST-EQ"),
    ("2 + 2 = 4\nI am not sure", "4", False, None, "LAST-EQ"),
    ("x = 5 is what we get", "5", False, None, "LAST-EQ"),
    ("12 apples", "12", False, None, "NO-STATE"),
    ("It costs $1,000", "1000", False, None, "NO-STATE"),
    ("12 then 13 then 1,400.", "1400", False, None, "NO-STATE"),
    ("I do not know.", "5", False, None, "NO-STATE"),
    ("", "5", False, None, "NO-STATE"),
    ("41", "41", True, "41", "ONLY-NUM"),
    ("41", "14", False, "41", "ONLY-NUM"),
    (r"\boxed{0.5}", r"\frac{1}{2}", True, "0.5", "MV-EQUIV"),
    (r"\boxed{3.0}", "3", True, "3.0", "MV-EQUIV"),
    (r"\boxed{\frac{\pi}{2}}", r"\pi/2", True, ..., "MV-EQUIV"),
    (r"\boxed{[1, 3)}", "[1,3)", True, ..., "MV-EQUIV"),
    (r"\boxed{y = 2x + 1}", "2x+1", True, ..., "MV-EQUIV"),
    (r"\boxed{\infty}", r"\infty", True, ..., "MV-EQUIV"),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", True, ..., "MV-EQUIV"),
    (r"\boxed{2^{3}}", "8", True, ..., "MV-EQUIV"),
    (r"\boxed{(1, 2)}", "(1,2)", True, ..., "MV-EQUIV"),
    (r"\boxed{\{1, 2\}}", r"\{1,2\}", True, ..., "MV-EQUIV"),
    (r"\boxed{x^2 + 1}", "x^2 - 1", False, ..., "MV-EQUIV"),
    (r"so \boxed{255}. Final Answer: The final answer is $10,455$. I hope it is correct.", "10455", True, "10455",
     "LAST-STATED"),
    (r"The answer is 4, so \boxed{5}", "5", True, "5", "LAST-STATED"),
    (r"\boxed{1}, \boxed{2} and \boxed{3}", r"\{1,2,3\}", True, "1, 2, 3", "LAST-STATED"),
    (r"\boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}", "(2, 2), (6, 2)", True, ..., "LAST-STATED"),
    (r"\boxed{1}, \boxed{2} and \boxed{3}", "3", True, "3", "LAST-STATED"),  # gold not a set: the last box
    (r"\boxed{1} no, wait: \boxed{2}", "1, 2", False, "2", "LAST-STATED"),  # not joined by , / and / or
    ("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", "120", True, "120", "ANSWER-IS"),
    ("Final Answer: Jane started growing Sphere 3 hours ago.", "3", True, "3", "ANSWER-IS"),
    ("Answer: 7 (because 3+4)", "7", True, "7", "ANSWER-IS"),
    ("Answer \\[ \n 9 \n \\]", "9", True, "9", "ANSWER-IS"),
    ("Answer $ \n 9 \n $", "9", False, None, "ANSWER-IS"),  # inline math does not span lines
    ("The solution is $x != 5$", r"x \neq 5", True, "x != 5", "ANSWER-IS"),
    ("Thus $x <= 2$ is our answer.", r"x \leq 2", True, "x <= 2", "ANSWER-IS"),
    ("the solution is to add 3 and 4, giving 7.", "7", False, None, "ANSWER-IS"),
    (r"\boxed{11,\! 111,\! 111,\! 100}", "11111111100", True, "11111111100", "BOX-UNITS"),
    (r"\boxed{12 \text{ cm}^2}", "12", True, ..., "BOX-UNITS"),
    (r"\boxed{(2,12) \cup (12,102)}", r"(2, 12) \cup (12, 102)", True, ..., "BOX-UNITS"),  # 12,102 is no thousands
    ("The answer is 12,102.", "12102", True, "12102", "BOX-UNITS"),
]


@pytest.mark.parametrize("response,gold,correct,extracted,convention", TABLE,
                         ids=[f"{i}-{row[-1]}" for i, row in enumerate(TABLE)])
def testgrading_table(response, gold, correct, extracted, convention):
    g = grade(response, gold)
    assert g.correct is correct, g
    if extracted is not ...:
        assert g.extracted == extracted, g


def test_table_covers_every_convention():
    assert len(TABLE) >= 60
    assert {row[-1] for row in TABLE} == {"MV-BOXED", "BOX-UNITS", "UNICODE", "GSM8K", "ANSWER-IS", "LAST-EQ",
                                          "NO-STATE", "ONLY-NUM", "MV-EQUIV", "LAST-STATED"}


def test_grading_is_the_same_off_the_main_thread():
    """math-verify's SIGALRM limit only works in the main thread; other threads use the helper process."""
    rows = TABLE[::3]
    main = [grade(r, gold) for r, gold, *_ in rows]
    out: list[Grade] = []
    th = threading.Thread(target=lambda: out.extend(grade(r, gold) for r, gold, *_ in rows))
    th.start()
    th.join(120)
    assert out == main


def test_answer_keys_cluster_equal_values():
    assert answer_key(r"\frac{1}{2}") == answer_key("0.5") == answer_key("1/2") == answer_key("½") == "1/2"
    assert answer_key(r"\sqrt{8}") == answer_key(r"2\sqrt{2}")
    assert answer_key("2^{3}") == answer_key("8")
    assert answer_key("1,000") == answer_key("$1000$") == answer_key("1000.0") == "1000"
    assert answer_key("**73**") == "73"
    assert answer_key(None) == "" and answer_key("  ") == ""
    assert answer_key(r"\sqrt{2}") == answer_key(r"\sqrt 2")
    assert answer_key("7") != answer_key("8")
    assert answer_key("−3") == answer_key("-3") == "-3" != answer_key("3")
    same = ["x = 3", "3", "3.0", r"\text{3 apples}", r"3\text{ apples}", "3 apples", "x=3", "$3$", "３"]
    assert {answer_key(a) for a in same} == {"3"}


def test_clusters_follow_the_grader():
    """maj@k, distinct answers and confidence count "x = 3", "3" and "3.0" as one answer, as the grader does."""
    from ptlens.behavior.metrics import distinct_answers, maj_at_k, modal_answer

    responses = [r"\boxed{x = 3}", r"\boxed{3}", r"\boxed{3.0}", r"\boxed{5}, no wait, \boxed{3}", r"\boxed{4}",
                 r"\boxed{4}", r"\boxed{\text{4 apples}}", "I give up"]
    grades = [grade(r, "3") for r in responses]
    keys = [answer_key(g.extracted) for g in grades]
    assert [g.correct for g in grades] == [True] * 4 + [False] * 4
    assert distinct_answers(keys) == 2
    assert modal_answer(keys, [g.correct for g in grades]) == ("3", 0.5, True)
    assert maj_at_k(keys, [g.correct for g in grades], 8) == 1.0  # one cluster of 4 beats 3; apart, 4 would win
    for a, b in [("x = 3", "3"), ("3.0", "3"), (r"\frac{1}{2}", "0.5"), ("3 apples", "3"), ("−2", "-2")]:
        assert (answer_key(a) == answer_key(b)) and grade(rf"\boxed{{{a}}}", b).correct


def test_fallback_extraction_order():
    assert extract_answer(r"first \boxed{3} then \boxed{\frac{1}{2}} ok") == r"\frac{1}{2}"
    assert extract_answer("so the answer is 42. I checked 3 times") == "42"
    assert extract_answer("#### 9\nThe answer is 8") == "8"  # the last stated answer, whatever its form
    assert extract_answer("The answer is 8\n#### 9") == "9"
    assert extract_answer(r"\boxed{42} The answer is correct because it checks.") == "42"  # no value: not an answer
    assert extract_answer("\\boxed{42}\nThe answer is consistent with step 3.") == "42"  # prose: only when alone
    assert extract_answer("Final Answer: the answer is consistent with step 3.") == "3"
    assert extract_answer("The answer is 8\n2 + 2 = 4") == "8"  # a stated answer outranks the last line
    assert extract_answer("12 then 13 then 1,400.") is None
    assert extract_answer("nothing here") is None


def test_builtin_problems_are_seeded_prefix_stable_short_ascii_and_exact():
    ps = builtin_problems(300, seed=4)
    assert ps == builtin_problems(300, seed=4)
    assert builtin_problems(10, seed=4) == ps[:10]
    assert ps != builtin_problems(300, seed=5)
    assert {p.level for p in ps} == {1, 2, 3}
    assert len({p.id for p in ps}) == 300
    for p in ps:
        assert len(p.question) < 120 and p.question.isascii()
        assert p.answer.lstrip("-").isdigit() and int(p.answer) >= 0
        if p.question.startswith("What is"):
            expr = p.question.removeprefix("What is ").rstrip("?")
            assert eval(expr) == int(p.answer)  # noqa: S307 - our own arithmetic
    assert all(p.level == 1 for p in load_problems("builtin:1", 20))


def test_jsonl_problems_report_malformed_lines_by_number(tmp_path):
    f = tmp_path / "p.jsonl"
    rows = [json.dumps({"id": "a", "question": "1+1?", "answer": "2"}), "{not json",
            json.dumps({"id": "b", "question": "2+2?"}), "", json.dumps({"id": "a", "question": "x", "answer": "1"}),
            json.dumps([1, 2])]
    f.write_text("\n".join(rows) + "\n")
    with pytest.raises(PtlensError) as e:
        jsonl_problems(f)
    msg = str(e.value)
    assert "line 2" in msg and "line 3: missing answer" in msg and "line 5: duplicate id" in msg and "line 6" in msg
    f.write_text(rows[0] + "\n" + json.dumps({"id": 7, "question": "3+4?", "answer": 7}) + "\n")
    assert load_problems(str(f)) == [Problem("a", "1+1?", "2", 0, "p.jsonl"), Problem("7", "3+4?", "7", 0, "p.jsonl")]


def test_problem_source_errors(tmp_path):
    with pytest.raises(PtlensError, match="no such file"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(PtlensError, match="expected builtin"):
        load_problems("mmlu")
    with pytest.raises(PtlensError, match="levels"):
        load_problems("builtin:7")
    with pytest.raises(PtlensError, match="--limit"):
        load_problems("builtin", limit=0)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PtlensError, match="no problems"):
        load_problems(str(tmp_path / "empty.jsonl"))


def test_hub_sets_fail_cleanly_offline(monkeypatch):
    """No network here: gsm8k must be a one-line user error (datasets missing or hub unreachable)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(PtlensError, match="gsm8k"):
        load_problems("gsm8k", limit=3)


def test_hub_set_gold_answers_follow_each_format(monkeypatch):
    """GSM8K's gold is after '####' (commas dropped); MATH-500's is its 'answer' field, kept as LaTeX."""
    import ptlens.behavior.problems as P

    rows = {"openai/gsm8k": [{"question": "Q1", "answer": "3 + 4 = 7\n#### 1,234"}],
            "HuggingFaceH4/MATH-500": [{"problem": "Q2", "answer": r"\frac{1}{2}", "unique_id": "test/x/1.json", "level": 3}]}
    monkeypatch.setattr(P, "_load_hf", lambda name, config, split: rows[name])
    assert P.gsm8k_problems() == [Problem("gsm8k-0", "Q1", "1234", 0, "gsm8k")]
    assert P.math500_problems() == [Problem("test/x/1.json", "Q2", r"\frac{1}{2}", 3, "math500")]
    assert grade(r"so \boxed{0.5}", P.math500_problems()[0].answer).correct


def test_flexible_extraction_is_the_last_number_stated_or_not():
    """lm-eval's gsm8k flexible-extract, kept beside the strict grade so that papers using either can be compared."""
    from ptlens.behavior.extraction import extract_flexible
    from ptlens.behavior.grading import grade_flexible

    assert extract_flexible("12 then 13 then 1,400.") == "1400"
    assert extract_flexible("It costs $1,000") == "1000"
    assert extract_flexible("The answer is −3 apples") == "-3"
    assert extract_flexible("I do not know.") is None
    assert grade_flexible("12 then 13 then 1,400.", "1400") == Grade("1400", True)
    assert grade("12 then 13 then 1,400.", "1400") == Grade(None, False)  # strict: no stated answer
    assert grade_flexible(r"\boxed{14} and 3 checks", "14") == Grade("3", False)  # flexible: the last number only
    assert grade_flexible("x = 0.50", r"\frac{1}{2}").correct and not grade_flexible("x = 2", r"\sqrt{4}").correct


def test_fallbacks_are_reported_not_hidden():
    """A math-verify timeout falls back to plain numbers and says so, in the main thread and off it."""
    slow = r"\boxed{9^{9^{9^{9}}}}"  # sympy evaluates the power: overruns any limit
    g = grade(slow, "2", timeout_s=1)
    assert g == Grade("9^{9^{9^{9}}}", False, "timeout")
    out: list[Grade] = []
    th = threading.Thread(target=lambda: out.append(grade(slow, "2", timeout_s=1)))
    th.start()
    th.join(60)
    assert out == [g]
    assert grade(r"\boxed{3}", "3").fallback is None


def test_fallbacks_are_counted_per_model():
    from ptlens.cli.behavior import grading_line
    from ptlens.behavior.assemble import grading_counts
    from ptlens.results.store import SampleRecord

    def rec(model, extracted, fallback):
        return SampleRecord(model=model, label=model, problem_id="p", sample=0, prompt="", response="", gold="1",
                            extracted=extracted, answer_key="", correct=False, tokens=1, truncated=False, finish="stop",
                            seed=0, token_ids=[1], grading_fallback=fallback)

    counts = grading_counts([rec("a", "1", None), rec("a", "x", "timeout"), rec("a", None, None),
                             rec("b", "2", "error")], ["a", "b"])
    assert counts["models"] == {"a": {"samples": 3, "fallback_timeout": 1, "fallback_error": 0, "no_answer": 1},
                                "b": {"samples": 1, "fallback_timeout": 0, "fallback_error": 1, "no_answer": 0}}
    results = {"grading": counts, "models": {
        "a": {"metrics": {"accuracy": {"value": 0.25}}, "accuracy_flexible": {"value": 0.5}},
        "b": {"metrics": {"accuracy": {"value": 0.75}}, "accuracy_flexible": None}}}
    assert grading_line(results) == ("grading (docs/GRADING.md): a 0.25 strict / 0.5 flexible, fallbacks: timeout 1, "
                                     "error 0; b 0.75 strict / – flexible, fallbacks: timeout 0, error 1")


def test_gold_written_as_a_solution_gives_its_boxes():
    from ptlens.behavior.extraction import gold_answer

    assert gold_answer(r"so the solutions are $n = \boxed{1,-2}.$") == "1,-2"
    assert gold_answer(r"\boxed{1} and \boxed{2}") == "1, 2"
    assert gold_answer(r"\frac{1}{2}") == r"\frac{1}{2}"
    assert grade(r"\[ \boxed{-2} \quad \text{and} \quad \boxed{1}. \]", r"so $n = \boxed{1,-2}.$").correct


def test_report_shows_strict_flexible_and_fallbacks():
    from ptlens.report.sections import grading_table
    from ptlens.results.store import BehaviorResults

    r = {"grading": {"models": {"a": {"samples": 8, "fallback_timeout": 2, "fallback_error": 0, "no_answer": 3}}},
         "models": {"a": {"metrics": {"accuracy": {"value": 0.25, "lo": 0.1, "hi": 0.4}},
                          "accuracy_flexible": {"value": 0.5, "lo": 0.3, "hi": 0.7}}}}
    (t,) = grading_table(BehaviorResults.from_dict(r))
    assert t["id"] == "tbl-grading"
    assert t["rows"] == [["a", ("0.25", "[0.1, 0.4]"), ("0.5", "[0.3, 0.7]"), "3", "2", "0"]]
    assert grading_table(BehaviorResults.from_dict({"models": {"a": {"metrics": {}}}})) == []  # results from before the grader recorded them


def test_extraction_stays_linear_on_adversarial_text():
    """Every anchor is looked at, so an answer sentence and a math span are bounded: no quadratic regex walks."""
    import time

    for text in ["answer is " * 5000 + "$" * 3000, "\\( " * 5000 + " is the answer", "The answer is " + "word " * 50000,
                 "answer: x" * 10000, "\\boxed{1}, " * 5000]:
        t = time.perf_counter()
        extract_answer(text, multi=True)
        assert time.perf_counter() - t < 1.0, text[:30]
