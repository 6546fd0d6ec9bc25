"""The library pipeline: ``ptlens.run`` from Python writes what ``ptlens run`` writes, reuses stored steps,
reports through its hooks, and the CLI is a skin over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ptlens
from ptlens.behavior.toy import make_toy_model
from ptlens.errors import PtlensError
from ptlens.pipeline import Reporter, RunConfig
from ptlens.results import files as F

torch.set_num_threads(1)

OPTIONS = dict(problems="builtin:1", limit=2, n_samples=2, max_new_tokens=5, spectral="off", device="cpu", engine="hf")
FLAGS = ["--problems", "builtin:1", "--limit", "2", "--n-samples", "2", "--max-new-tokens", "5", "--spectral", "off",
         "--device", "cpu", "--engine", "hf"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    bias = {c: 3.0 for c in "0123456789"}
    make_toy_model(root / "base", seed=0, logit_bias={**bias, "</s>": 2.0}, noise=0.3)
    make_toy_model(root / "sft", seed=1, logit_bias={**bias, "</s>": 3.0}, noise=0.3)
    return [f"base={root / 'base'}", f"sft={root / 'sft'}"]


class Recorder(Reporter):
    def __init__(self):
        self.events: list[tuple] = []

    def message(self, text):
        self.events.append(("message", text))

    def warning(self, text):
        self.events.append(("warning", text))

    def weights_done(self, summary, output_dir, missing):
        self.events.append(("weights", [t["name"] for t in summary["transitions"]]))

    def behavior_done(self, result):
        self.events.append(("behavior", list(result.results["models"])))

    def mechanism_done(self, result, output_dir):
        self.events.append(("mechanism", result.reused))

    def report_done(self, result):
        self.events.append(("report", [v.label for v in result["verdicts"]]))


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def _json_without(path: Path, *keys: str) -> dict:
    d = json.loads(path.read_text())
    for k in keys:
        d.pop(k, None)
    return d


@pytest.fixture(scope="module")
def both(toy, tmp_path_factory):
    """The same run from Python and from the CLI, each into its own folder."""
    root = tmp_path_factory.mktemp("runs")
    rec = Recorder()
    res = ptlens.run(toy, output_dir=root / "py", reporter=rec, **OPTIONS)
    from ptlens.cli import app

    cli = CliRunner().invoke(app, ["run", "--models", *toy, "--output-dir", str(root / "cli"), *FLAGS])
    assert cli.exit_code == 0, cli.output
    return res, rec, root / "py", root / "cli", cli.output


def test_python_run_writes_the_same_files_as_the_cli(both):
    res, _, py, cli, _ = both
    assert _files(py) == _files(cli)
    for must in (F.TENSORS_CSV, F.WEIGHT_SUMMARY, F.WEIGHT_REPORT_MD, F.BEHAVIOR_RESULTS, F.SAMPLES_JSONL,
                 F.MECHANISM_SUMMARY, F.REPORT_HTML, F.REPORT_MD, F.VERDICTS_JSON):
        assert (py / must).is_file(), must
    assert (py / F.TENSORS_CSV).read_bytes() == (cli / F.TENSORS_CSV).read_bytes()
    assert (py / F.SAMPLES_JSONL).read_bytes() == (cli / F.SAMPLES_JSONL).read_bytes()  # seeded per sample
    volatile = ("command", "seconds", "throughput_gb_per_s", "created", "lineage")
    assert _json_without(py / F.WEIGHT_SUMMARY, *volatile) == _json_without(cli / F.WEIGHT_SUMMARY, *volatile)
    assert _json_without(py / F.BEHAVIOR_RESULTS, *volatile) == _json_without(cli / F.BEHAVIOR_RESULTS, *volatile)
    assert json.loads((py / F.VERDICTS_JSON).read_text()) == json.loads((cli / F.VERDICTS_JSON).read_text())
    # the returned records are what was stored
    assert res.weights.summary["aggregates"] == json.loads((py / F.WEIGHT_SUMMARY).read_text())["aggregates"]
    assert list(res.behavior.results["models"]) == ["base", "sft"]
    assert res.mechanism is not None and not res.mechanism.reused
    assert [v.label for v in res.report["verdicts"]] == [v["label"] for v in
                                                          json.loads((py / F.VERDICTS_JSON).read_text())["verdicts"]]


def test_reporter_hears_every_step_in_order(both):
    _, rec, _, _, cli_output = both
    kinds = [e[0] for e in rec.events if e[0] != "message"]
    assert kinds == ["weights", "behavior", "mechanism", "report"]
    assert ("weights", ["base→sft"]) in rec.events and ("behavior", ["base", "sft"]) in rec.events
    assert any(e[0] == "message" and F.WEIGHT_REPORT_MD in e[1] for e in rec.events)
    assert "Verdicts" in cli_output and "Weight changes" in cli_output  # the CLI's reporter prints them
    assert "behaviour results: " in cli_output and F.BEHAVIOR_RESULTS in cli_output  # where they went
    assert "\nptlens run: done in " in cli_output  # and the total time


def test_rerun_reuses_weights_and_mechanism(both, toy):
    _, _, py, _, _ = both
    csv_before = (py / F.TENSORS_CSV).stat().st_mtime_ns
    rec = Recorder()
    res = ptlens.run(toy, reporter=rec, config=RunConfig.from_options(py, **OPTIONS))
    assert res.weights.reused and res.mechanism.reused
    assert (py / F.TENSORS_CSV).stat().st_mtime_ns == csv_before
    assert any(e[0] == "message" and e[1].startswith("weights: reusing") for e in rec.events)


def test_weights_only_lineage_skips_behaviour(tmp_path):
    """A lineage without tokenizers: weights and report, behaviour skipped with a warning naming the checkpoints."""
    for i, name in enumerate(("a", "b")):
        make_toy_model(tmp_path / name, seed=i, tokenizer=False)
    rec = Recorder()
    res = ptlens.run([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"], output_dir=tmp_path / "out", reporter=rec,
                     spectral="off", device="cpu", limit=2)
    assert res.behavior is None and res.behavior_skipped == ["a", "b"]
    assert ("warning", "behaviour skipped: no tokenizer in a, b (weights-only lineage)") in rec.events
    assert (tmp_path / "out" / F.REPORT_HTML).is_file() and not (tmp_path / "out" / F.BEHAVIOR_RESULTS).exists()


def test_bad_options_fail_before_any_work(toy, tmp_path):
    with pytest.raises(PtlensError, match="--n-samples must be at least 1"):
        ptlens.run(toy, output_dir=tmp_path / "o", n_samples=0)
    with pytest.raises(PtlensError, match="not both"):
        ptlens.run(toy, config=RunConfig(), limit=3)
    assert not (tmp_path / "o").exists()


def test_library_exports():
    for name in ("run", "run_weights", "run_behavior", "run_mechanism", "run_report", "RunConfig", "Reporter",
                 "ScanConfig", "BehaviorConfig", "MechanismConfig"):
        assert hasattr(ptlens, name), name
    assert ptlens.ScanConfig().spectral == "topk"
    import importlib

    importlib.import_module("ptlens.weights")  # the subpackage keeps its name; the step function is run_weights
    assert callable(ptlens.run_weights) and not callable(ptlens.weights)
