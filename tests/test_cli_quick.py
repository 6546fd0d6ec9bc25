"""`ptlens quick`: the same seed gives the same answers, panels say correct/wrong, problems stay apart in a log."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ptlens.behavior.problems import load_problems
from ptlens.behavior.quick import QuickConfig, _Stream, panel_title, quick_compare
from ptlens.behavior.toy import make_toy_model
from ptlens.resolve import resolve_lineage


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    bias = {c: 3.0 for c in "0123456789"}
    make_toy_model(root / "a", seed=0, logit_bias={**bias, "</s>": 1.0}, noise=1.0)
    make_toy_model(root / "b", seed=1, logit_bias={**bias, "</s>": 1.0}, noise=1.0)
    return resolve_lineage(models=[f"a={root / 'a'}", f"b={root / 'b'}"])


def _run(lineage, seed=0):
    buf = io.StringIO()
    console = Console(file=buf, width=100, color_system=None)
    cfg = QuickConfig(limit=2, seed=seed, temperature=1.0, max_new_tokens=12, device="cpu")
    rows = quick_compare(lineage, load_problems("builtin:1", 2, seed), cfg, console=console)
    return rows, buf.getvalue()


def test_same_seed_same_answers(lineage):
    (r1, text1), (r2, text2) = _run(lineage), _run(lineage)
    assert [r.response for r in r1] == [r.response for r in r2]
    assert [r.mean_logprob for r in r1] == [r.mean_logprob for r in r2]
    assert len({r.response for r in r1}) > 1  # noisy sampling: equal runs are not equal by accident
    r3, _ = _run(lineage, seed=1)
    assert [r.response for r in r3] != [r.response for r in r1]
    assert text1 == text2


def test_titles_say_correct_or_wrong_and_problems_stay_apart(lineage):
    rows, text = _run(lineage)
    for r in rows:
        assert f"{r.model}  {'✓ correct' if r.correct else '✗ wrong'}" in text
    assert "\n\nproblem 2/2" in text  # a blank line, not glued to the previous panel


def test_panel_title_states():
    st = _Stream()
    assert "waiting" in panel_title("m", st)
    st.started = True
    assert "generating" in panel_title("m", st)
    st.done = True
    assert "grading" in panel_title("m", st)
    st.correct, st.extracted = False, "41"
    assert "✗ wrong" in panel_title("m", st) and "41" in panel_title("m", st)
    st.correct = True
    assert "✓ correct" in panel_title("m", st)


def test_quick_names_the_shipped_models_by_stage(tmp_path):
    """`ptlens quick sft rlvr` runs the embedded tiny lineage's stages (it used to look them up on the hub);
    --preset picks the lineage, and a stage it lacks is named with the stages it has."""
    from typer.testing import CliRunner

    from ptlens.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["quick", "sft", "rlvr", "--limit", "1", "--max-new-tokens", "6", "--device", "cpu"],
                        terminal_width=120)
    assert res.exit_code == 0, res.output
    table = res.output[res.output.index("ptlens quick (log-prob"):]
    assert "│ all          │ sft " in table and "│ all          │ rlvr " in table
    res = runner.invoke(app, ["quick", "sft-step0400", "sft", "--preset", "tiny-trajectory", "--limit", "1",
                              "--max-new-tokens", "4", "--device", "cpu"], terminal_width=120)
    assert res.exit_code == 0, res.output
    assert "sft-step0400" in res.output[res.output.index("ptlens quick (log-prob"):]
    res = runner.invoke(app, ["quick", "sft", "nope", "--preset", "tiny"])
    assert res.exit_code == 2
    assert "'nope' is no stage of preset 'tiny': its stages are base, sft, dpo, rlvr" in res.output
    res = runner.invoke(app, ["quick", "--help"], terminal_width=120)
    assert "ptlens quick sft rlvr" in res.output and "--preset" in res.output
