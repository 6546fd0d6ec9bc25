"""The README's headline numbers, asserted from a fresh default run (``ptlens run`` on the shipped lineage).

The numbers are read from README.md itself, so the promise and the check cannot drift apart: change what the
default run shows and this test fails until the README says so. Tolerances: the README rounds accuracies to two
decimals (±0.005) and the run may differ by a few samples across platforms and thread counts (±0.02 more).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ptlens.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
TOL = 0.025
NUM = r"([+−-]?\d+\.\d+)"


def _num(s: str) -> float:
    return float(s.replace("−", "-"))


def readme_headline() -> dict:
    """The quick start's sentence 'What that run shows …', parsed; fails loudly when it is reworded."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    m = re.search(rf"accuracy base {NUM}, sft {NUM}, dpo {NUM}, rlvr {NUM} \(dpo → rlvr {NUM} \[{NUM}, {NUM}\]; "
                  rf"rlvr − sft {NUM} \[{NUM}, {NUM}\]\) while pass@16 stays at {NUM}–{NUM}", text)
    labels = re.search(r"The report's verdicts: learning dynamics \*(\w[\w ]*)\*, reasoning behaviour \*(\w[\w ]*)\*, "
                       r"sample efficiency \*(\w[\w ]*)\*, transfer \*(\w[\w ]*)\*", text)
    assert m and labels, "README's headline sentences ('accuracy base …', 'The report's verdicts …') were reworded"
    v = [_num(g) for g in m.groups()]
    return {"accuracy": dict(zip(["base", "sft", "dpo", "rlvr"], v[:4])), "dpo_rlvr": v[4:7], "rlvr_sft": v[7:10],
            "pass16": v[10:12], "labels": dict(zip(["Learning dynamics", "Reasoning behaviour", "Sample efficiency",
                                                     "Transfer"], labels.groups()))}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, monkeypatch_module):
    """The README's main job, as typed: ``ptlens run`` with no arguments, in an empty folder."""
    root = tmp_path_factory.mktemp("default")
    monkeypatch_module.chdir(root)
    res = CliRunner().invoke(app, ["run"])
    assert res.exit_code == 0, res.output
    return root / "analysis_results", res.output


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _evidence(verdicts: dict, question: str, check: str) -> dict:
    q = next(v for v in verdicts["verdicts"] if v["question"] == question)
    c = next(c for c in q["checks"] if c["name"].startswith(check))
    return {e[0]: (e[1], e[2]) for e in c["evidence"]}


@pytest.mark.slow
def test_default_run_shows_what_the_readme_says(default_run):
    out, console = default_run
    want = readme_headline()
    results = json.loads((out / "model_comparison_results.json").read_text())
    for model, acc in want["accuracy"].items():
        got = results["models"][model]["metrics"]["accuracy"]["value"]
        assert abs(got - acc) <= 0.005 + TOL, (model, got, acc)
    pair = next(c for c in results["consecutive"] if (c["a"], c["b"]) == ("dpo", "rlvr"))["difference"]["accuracy"]
    for got, stated in zip((pair["value"], pair["lo"], pair["hi"]), want["dpo_rlvr"]):
        assert abs(got - stated) <= 0.0005 + TOL, ("dpo → rlvr", got, stated)
    assert pair["lo"] > 0
    verdicts = json.loads((out / "report" / "verdicts.json").read_text())
    value, (lo, hi) = _evidence(verdicts, "Reasoning behaviour", "Accuracy")["accuracy: rlvr − sft (paired)"]
    for got, stated in zip((value, lo, hi), want["rlvr_sft"]):
        assert abs(got - stated) <= 0.005 + TOL, ("rlvr − sft", got, stated)
    assert lo > 0
    lo16, hi16 = want["pass16"]
    for model in ("sft", "dpo", "rlvr"):
        got = results["models"][model]["metrics"]["pass@16"]["value"]
        assert lo16 - 0.005 - TOL <= got <= hi16 + 0.005 + TOL, (model, got)
    # "the number of distinct answers, distinct-4 and token entropy fall from sft to rlvr"
    for metric in ("distinct_answers", "distinct_4", "token_entropy"):
        m = {k: results["models"][k]["metrics"][metric]["value"] for k in ("sft", "rlvr")}
        assert m["rlvr"] < m["sft"], (metric, m)
    labels = {v["question"]: v["label"] for v in verdicts["verdicts"]}
    assert labels == want["labels"], labels
    assert "report:" in console


def test_readme_pattern_reads_the_stated_numbers():
    """The parser itself: the README's sentence gives the values the quick start quotes."""
    h = readme_headline()
    assert set(h["accuracy"]) == {"base", "sft", "dpo", "rlvr"} and h["rlvr_sft"][1] < h["rlvr_sft"][0] < h["rlvr_sft"][2]


@pytest.mark.slow
def test_default_run_writes_the_seeds_files_and_reuses_them(default_run):
    """The seed's file names, a self-contained report, and a rerun that reuses every step byte for byte."""
    out, console = default_run
    assert (out / "weight_analysis_report.md").is_file() and (out / "sft_vs_rlvr_comparison.png").is_file()
    assert "behaviour skipped" not in console
    results = json.loads((out / "model_comparison_results.json").read_text())
    assert list(results["models"]) == ["base", "sft", "dpo", "rlvr"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and (out / "report.md").is_file()
    assert "This lineage was trained by ptlens lab" in html
    samples = (out / "behavior" / "samples.jsonl").read_bytes()
    again = CliRunner().invoke(app, ["run"])
    assert again.exit_code == 0 and "reusing" in again.output, again.output
    assert (out / "behavior" / "samples.jsonl").read_bytes() == samples
    assert (out / "report.html").read_text() == html
