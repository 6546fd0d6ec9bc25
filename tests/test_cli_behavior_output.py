"""What `ptlens behavior` says: the plan up front, a time estimate after the first batch, and at the end where
the results went and how long it took."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from ptlens.behavior.toy import make_toy_model
from ptlens.progress import duration_text


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("behavior_output")
    bias = {c: 3.0 for c in "0123456789"}
    make_toy_model(root / "base", seed=0, logit_bias={**bias, "</s>": 2.0}, noise=0.3)
    make_toy_model(root / "sft", seed=1, logit_bias={**bias, "</s>": 3.0}, noise=0.3)
    return [f"base={root / 'base'}", f"sft={root / 'sft'}"]


def test_plan_estimate_paths_and_time(models, tmp_path):
    from ptlens.cli import app

    out = tmp_path / "res"
    res = CliRunner().invoke(app, ["behavior", *models, "--problems", "builtin:1", "--limit", "3", "--n-samples", "2",
                                   "--batch-size", "2", "--max-new-tokens", "5", "--device", "cpu", "--engine", "hf",
                                   "--output-dir", str(out)], terminal_width=200)
    assert res.exit_code == 0, res.output
    text = re.sub(r"\s*\n\s*", "\n", res.output)
    flat = " ".join(res.output.split())  # the 80-column console wraps long notes
    assert ("behaviour: 3 problems × 2 samples × 2 models = 12 samples to draw and grade, each then scored under each "
            "of the 2 models (engine hf)") in flat
    # after the first batch of each kind: the whole run's count of that kind and a duration
    assert re.search(r"drawing and grading: 12 samples in all at [\d.]+/s \(first batch\) → about \d+ s", flat), text
    assert re.search(r"scoring: 24 responses in all at [\d.]+/s \(first batch\) → about \d+ s", flat), text
    assert text.index("behaviour: 3 problems") < text.index("base: sample") < text.index("drawing and grading")
    assert f"behaviour results: {out / 'model_comparison_results.json'}" in text
    assert f"figures: {out / 'behavior'}/" in text
    assert re.search(r"ptlens behavior: done in [\d.]+ s\n?$", text.rstrip() + "\n"), text[-300:]


def test_duration_text():
    assert [duration_text(s) for s in (4.4, 59, 61, 3599, 3600, 12_000, 100_000, 500_000)] == [
        "4 s", "59 s", "1 min", "60 min", "1 h", "3 h 20 min", "27 h 47 min", "5.8 days"]
