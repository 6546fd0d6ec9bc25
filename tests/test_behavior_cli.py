"""`ptlens behavior` and `ptlens quick` through typer, on toy models; grading time limits off the main thread."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch
from typer.testing import CliRunner

from ptlens.cli.kit import model_items
from ptlens.behavior.grading import grade
from ptlens.behavior.toy import make_toy_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def app_and_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("behavior_cli")
    bias = {c: 3.0 for c in "0123456789"}
    make_toy_model(root / "base", seed=0, logit_bias={**bias, "</s>": 2.0}, noise=0.3)
    make_toy_model(root / "sft", seed=1, logit_bias={**bias, "</s>": 3.0}, noise=0.3)
    from ptlens.cli import app  # the real CLI: its option normaliser makes --output_dir work

    return app, root


def test_models_items_forms():
    assert model_items(["a=X", "b=Y"], None) == ["a=X", "b=Y"]
    assert model_items(["a=X"], ["b=Y", "c=Z"]) == ["a=X", "b=Y", "c=Z"]
    assert model_items(["a=X b=Y"], None) == ["a=X", "b=Y"]


def test_behavior_command_writes_results(app_and_models, tmp_path):
    app, root = app_and_models
    out = tmp_path / "res"
    args = ["behavior", "--models", f"base={root / 'base'}", f"sft={root / 'sft'}", "--problems", "builtin:1",
            "--limit", "2", "--n-samples", "2", "--max-new-tokens", "5", "--device", "cpu", "--engine", "hf",
            "--output_dir", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "model_comparison_results.json").read_text())
    assert list(res["models"]) == ["base", "sft"] and res["settings"]["max_new_tokens"] == 5
    assert "grading (docs/GRADING.md): base " in r.output and "flexible, fallbacks: timeout 0, error 0" in r.output
    r = CliRunner().invoke(app, args[:-4] + ["--n-samples", "3", "--output-dir", str(out)])
    assert r.exit_code == 2 and "other settings" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("extra,message", [
    (["--n-samples", "0"], "--n-samples must be at least 1"),
    (["--problems", "nope.jsonl"], "no such file"),
    (["--engine", "vllm"], "--engine vllm: vLLM not found"),
])
def test_behavior_command_user_errors(app_and_models, tmp_path, extra, message, monkeypatch):
    app, root = app_and_models
    monkeypatch.setenv("PTLENS_VLLM_PYTHON", str(tmp_path / "no-python"))  # a Python without vLLM
    r = CliRunner().invoke(app, ["behavior", f"base={root / 'base'}", f"sft={root / 'sft'}", "--output-dir",
                                 str(tmp_path), *extra])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_quick_streams_and_tabulates(app_and_models):
    app, root = app_and_models
    r = CliRunner().invoke(app, ["quick", str(root / "base"), f"tuned={root / 'sft'}", "--limit", "2",
                                 "--max-new-tokens", "6", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "ptlens quick" in r.output and "base" in r.output and "tuned" in r.output
    assert "problem 2/2" in r.output and "log-prob" in r.output


def test_grading_time_limit_holds_off_the_main_thread():
    out = []
    th = threading.Thread(target=lambda: out.append(grade(r"\boxed{(x+1)^{200000}}", "(x+1)^{200001}", timeout_s=1)))
    t = time.time()
    th.start()
    th.join(60)
    assert out and out[0].correct is False and out[0].fallback == "timeout"
    assert time.time() - t < 30


def test_behavior_resume_says_what_was_reused_and_logs_progress(app_and_models, tmp_path):
    """Off a terminal (CliRunner) progress comes as lines, and a rerun says it resumed and how much it reused."""
    app, root = app_and_models
    out = tmp_path / "res"
    args = ["behavior", f"base={root / 'base'}", f"sft={root / 'sft'}", "--problems", "builtin:1", "--limit", "2",
            "--n-samples", "2", "--max-new-tokens", "4", "--device", "cpu", "--engine", "hf", "--output-dir", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "base: sample (hf): 4/4 samples (100%)" in first.output and "resumed" not in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "base: resumed: 4 of 4 samples reused" in again.output
    assert "sft: resumed: 4 of 4 samples reused" in again.output


def test_behavior_bad_option_leaves_nothing(app_and_models, tmp_path):
    app, root = app_and_models
    out = tmp_path / "never"
    r = CliRunner().invoke(app, ["behavior", f"base={root / 'base'}", "--top-p", "0", "--output-dir", str(out)])
    assert r.exit_code == 2 and "--top-p" in r.output and not out.exists()
