"""ptlens's grader against Math-Verify's own regression tests (real model outputs: OpenThoughts, NuminaMath, MATH).

tests/data/math_verify_cases.json holds the decided cases of github.com/huggingface/Math-Verify at commit
5d148cfaaf99214c2e4ffb4bc497ab042c592a7a whose response states an answer (\\boxed, ####, "answer is",
"Final Answer", ...), extracted by scripts/extract_math_verify_cases.py. Each case must agree with Math-Verify's
verdict or be a documented convention (listed in the file with its reason, and in docs/GRADING.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptlens.behavior.grading import grade

DATA = json.loads((Path(__file__).parent / "data" / "math_verify_cases.json").read_text(encoding="utf-8"))
CASES = DATA["cases"]
CONVENTIONS = DATA["conventions"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_grader_agrees_with_math_verify(case):
    g = grade(case["response"], case["gold"])
    if case["id"] in CONVENTIONS:
        assert g.correct is not case["correct"], f"{case['id']} agrees now: drop it from the conventions"
    else:
        assert g.correct is case["correct"], g
    assert g.fallback is None


def test_table_is_what_the_docs_say():
    """130 cases from the cited commit; one documented convention; every convention names a case of the table."""
    assert DATA["commit"] == "5d148cfaaf99214c2e4ffb4bc497ab042c592a7a"
    assert len(CASES) == 130 and len({c["id"] for c in CASES}) == 130
    assert set(CONVENTIONS) <= {c["id"] for c in CASES} and len(CONVENTIONS) == 1
    assert all(len(reason) > 40 for reason in CONVENTIONS.values())
    doc = (Path(__file__).parents[1] / "docs" / "GRADING.md").read_text(encoding="utf-8")
    assert DATA["commit"] in doc and all(case_id in doc for case_id in CONVENTIONS)
