"""Grading of tricky answers, answer clustering, and the problem sources."""

from __future__ import annotations

import json
import threading

import pytest

from ptlens.behavior.grading import Grade, answer_key, extract_answer, grade
from ptlens.behavior.problems import Problem, builtin_problems, jsonl_problems, load_problems
from ptlens.errors import PtlensError

TABLE = [
    (r"So the result is \boxed{\frac{1}{2}}.", "0.5", True),
    ("The answer is **73**", "73", True),
    ("It costs $1,000", "1000", True),
    ("It costs \\$1,000.", "1000", True),
    ("The answer is 1,000.", "1,000", True),
    ("12 apples", "12", True),
    ("I do not know.", "5", False),
    ("", "5", False),
    (r"\boxed{8}", "7", False),
    ("the answer is 7. Then again 8", "7", True),
    (r"x = \boxed{\sqrt{2}}", r"\sqrt{2}", True),
    (r"\boxed{\dfrac{3}{4}}", r"\frac34", True),
    ("The answer is -3", "-3", True),
    ("41 + 40 = 81", "81", True),
]


@pytest.mark.parametrize("response,gold,correct", TABLE)
def test_grading_table(response, gold, correct):
    g = grade(response, gold)
    assert g.correct is correct, g
    if not response.strip() or response == "I do not know.":
        assert g.extracted is None


def test_grading_is_the_same_off_the_main_thread():
    """math-verify's SIGALRM limit only works in the main thread; other threads use the helper process."""
    main = [grade(r, gold) for r, gold, _ in TABLE]
    out: list[Grade] = []
    th = threading.Thread(target=lambda: out.extend(grade(r, gold) for r, gold, _ in TABLE))
    th.start()
    th.join(120)
    assert out == main


def test_answer_keys_cluster_equal_values():
    assert answer_key(r"\frac{1}{2}") == answer_key("0.5") == answer_key("1/2") == "1/2"
    assert answer_key(r"\sqrt{8}") == answer_key(r"2\sqrt{2}")
    assert answer_key("2^{3}") == answer_key("8")
    assert answer_key("1,000") == answer_key("$1000$") == answer_key("1000.0") == "1000"
    assert answer_key("**73**") == "73"
    assert answer_key(None) == "" and answer_key("  ") == ""
    assert answer_key(r"\sqrt{2}") == answer_key(r"\sqrt 2")
    assert answer_key("7") != answer_key("8")


def test_fallback_extraction_order():
    assert extract_answer(r"first \boxed{3} then \boxed{\frac{1}{2}} ok") == r"\frac{1}{2}"
    assert extract_answer("so the answer is 42. I checked 3 times") == "42"
    assert extract_answer("12 then 13 then 1,400.") == "1400"
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
