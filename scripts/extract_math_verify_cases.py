"""Extract Math-Verify's decided test cases into tests/data/math_verify_cases.json (data only).

Math-Verify (github.com/huggingface/Math-Verify) keeps regression tests built from real model
outputs (OpenThoughts, NuminaMath, MATH) as ``pytest.mark.parametrize`` tables of
``(gold, pred, expected)``. This script reads those tables from a checkout's git history
without importing or copying their code (``ast`` on the file text, literals only), keeps the
cases whose response *states* an answer (``\\boxed{}``, ``####``, "answer is", "Final Answer",
"Answer:", "Answer $…$", "the solution is", "… is our answer") and writes them with their origin
(file, test, row) and the commit read.

    python scripts/extract_math_verify_cases.py /work/.mirror/huggingface+Math-Verify/repo [COMMIT]

Rows whose verdict depends on a non-default option (``strict=False``, ``allow_set_relation_comp``,
a ``precision`` other than 6) are skipped: ptlens grades with math-verify's defaults. The
``conventions`` of the existing data file (ptlens's documented disagreements, with reasons) are
kept across re-extractions.
"""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "math_verify_cases.json"
FILES = ["tests/test_all.py", "tests/test_boxed.py", "tests/test_numina_cases.py", "tests/test_open_thoughts.py",
         "tests/test_yujianll.py", "tests/test_strict.py"]
STATES = re.compile(r"\\boxed|\\fbox|####|final answer|\b(?:answer|solution)\s*(?:is\b|:|\$|\\[(\[])"
                    r"|\bis (?:the|our) (?:final )?(?:answer|solution)\b", re.IGNORECASE)
DEFAULTS = {"strict": True, "allow_set_relation_comp": False, "precision": 6}


def _value(node: ast.AST):
    """A literal, or an f-string of ``math`` calls (test_float_precision); nothing else is evaluated."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        src = ast.unparse(node)
        if not re.fullmatch(r"f['\"][\w{}.:()\\ +$-]*['\"]", src):
            raise
        return eval(src, {"__builtins__": {}, "math": math})  # noqa: S307 - an f-string of math.sqrt only


def _tables(source: str):
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for dec in fn.decorator_list:
            if not (isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("parametrize")):
                continue
            names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
            if "gold" not in names or "pred" not in names:
                continue
            for i, row in enumerate(dec.args[1].elts):
                yield fn.name, i, dict(zip(names, (_value(e) for e in row.elts)))


def extract(repo: Path, commit: str) -> dict:
    cases, skipped = [], 0
    for path in FILES:
        source = subprocess.run(["git", "--git-dir", str(repo), "show", f"{commit}:{path}"], check=True,
                                capture_output=True, text=True).stdout
        for test, i, row in _tables(source):
            expected = row.get("expected", row.get("result"))
            if any(row.get(k, v) != v for k, v in DEFAULTS.items()) or expected not in (0, 1):
                skipped += 1
                continue
            gold, pred = row["gold"], row["pred"]
            if STATES.search(pred):
                response, answer, swapped = pred, gold, False
            elif STATES.search(gold):  # verify() is symmetric; a few rows put the model's text first
                response, answer, swapped = gold, pred, True
            else:
                continue
            cases.append({"id": f"{Path(path).stem}::{test}[{i}]", "response": response, "gold": answer,
                          "correct": bool(expected), "swapped": swapped})
    return {"source": "https://github.com/huggingface/Math-Verify", "commit": commit,
            "note": "Decided cases of Math-Verify's tests whose response states an answer; extracted by "
                    "scripts/extract_math_verify_cases.py. 'swapped': the test's gold was the model's text.",
            "skipped_non_default_options": skipped, "cases": cases}


def main() -> None:
    repo = Path(sys.argv[1])
    repo = repo / ".git" if (repo / ".git").exists() else repo
    commit = sys.argv[2] if len(sys.argv) > 2 else subprocess.run(
        ["git", "--git-dir", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    data = extract(repo, commit)
    if OUT.exists():
        data["conventions"] = json.loads(OUT.read_text()).get("conventions", {})
    else:
        data["conventions"] = {}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(data['cases'])} cases stating an answer from {commit[:12]} → {OUT}")


if __name__ == "__main__":
    main()
