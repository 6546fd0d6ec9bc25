"""Every console table the CLI prints stays readable at 80 columns: the cells that identify a row appear whole,
no cell is cut with an ellipsis, no line is wider than the console."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from ptlens.cli.behavior import summary_tables
from ptlens.behavior.quick import QuickRow, summary_table
from ptlens.cli.app import app, preset_renderables
from ptlens.cli.console import weight_summary_renderables
from ptlens.resolve import resolve_lineage
from ptlens.resolve.presets import PRESETS
from ptlens.weights import ScanConfig, scan_lineage, write_outputs
from weights_helpers import base_weights, write_lineage


CUT = re.compile(r"\w…")
"""How rich marks a cell it cut (``accura…``); a free-standing "…" in a description is text, not a cut."""


def render(items, width: int = 80) -> str:
    c = Console(width=width, record=True, file=open("/dev/null", "w"), color_system=None)
    for it in items if isinstance(items, list) else [items]:
        c.print(it)
    return c.export_text()


def assert_fits(text: str, width: int = 80) -> None:
    assert not CUT.search(text), text
    assert max(len(line) for line in text.splitlines()) <= width, text


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """Weight summaries of a real scan: a plain lineage and a trajectory with repeated labels."""
    root = tmp_path_factory.mktemp("tables")
    g = torch.Generator().manual_seed(0)
    base = base_weights(dtype=torch.bfloat16)
    step = lambda w, s: {k: (v.float() + s * torch.randn(v.shape, generator=g)).bfloat16() for k, v in w.items()}
    sft = step(base, 1e-2)
    dpo, rl1 = step(sft, 1e-3), None
    rl1 = step(dpo, 1e-3)
    rl2 = step(rl1, 1e-3)
    rl3 = step(rl2, 1e-3)
    out = {}
    for name, labels, ws in (("plain", ["base", "sft", "dpo", "rlvr"], [base, sft, dpo, rl3]),
                             ("trajectory", ["base", "sft", "rlvr", "rlvr", "rlvr"], [base, sft, rl1, rl2, rl3])):
        args = write_lineage(root / name, {f"{l}{i}": w for i, (l, w) in enumerate(zip(labels, ws))})
        args = [f"{l}={a.split('=', 1)[1]}" for l, a in zip(labels, args)]
        res = scan_lineage(resolve_lineage(models=args), ScanConfig(spectral="topk", k=4))
        out[name] = write_outputs(res, root / name / "out", figures=False)
    return out


def test_weight_table_keeps_transition_names_whole(scanned):
    text = render(weight_summary_renderables(scanned["plain"], Path("out")))
    assert_fits(text)
    for t in ("base→sft", "sft→dpo", "dpo→rlvr", "base→dpo", "base→rlvr"):
        assert f"│ {t} " in text, t
    assert "principal" in text and "overlap" in text and "whole model" in text


def test_weight_table_trajectory_rows_are_distinct(scanned):
    text = render(weight_summary_renderables(scanned["trajectory"], Path("out")))
    assert_fits(text)
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    for t in ("base→rlvr#1", "base→rlvr#2", "base→rlvr#3", "rlvr#1→rlvr#2", "rlvr#2→rlvr#3"):
        assert t in rows, (t, rows)


def test_weight_table_says_when_filtered_and_leaves_out_tiny_throughput(scanned):
    s = dict(scanned["plain"], settings={**scanned["plain"]["settings"], "layer_pattern": r"layers\.0\."})
    text = render(weight_summary_renderables(s, Path("out")))
    assert r"tensors matching layers\.0\." in text and "whole model" not in text
    assert "/s)" not in text and "one-off costs" in text  # a few MB: no GB/s figure
    big = dict(s, bytes_read=16_000_000_000, seconds=10.0, throughput_gb_per_s=1.6)
    assert "1.6 GB/s" in render(weight_summary_renderables(big, Path("out")))


def _results(names, k=16):
    e = lambda v: {"value": v, "lo": v - 0.0712, "hi": v + 0.0831}
    metrics = {m: e(0.4123) for m in ("accuracy", f"pass@{k}", f"maj@{k}", "distinct_answers", "token_entropy",
                                      "length_mean", "ece")}
    return {"ks": [1, 2, 4, 8, k], "models": {n: {"metrics": metrics} for n in names}}


@pytest.mark.parametrize("names", [["base", "sft", "dpo", "rlvr"],
                                   ["base", "sft#1", "sft#2", "dpo#1", "dpo#2", "rlvr#1", "rlvr#2", "rlvr#3"],
                                   ["Llama-3.1-Tulu-3-8B-SFT", "Llama-3.1-Tulu-3-8B"]])
def test_behaviour_table_keeps_headers_intervals_and_models_whole(names):
    text = render(summary_tables(_results(names)))
    assert_fits(text)
    for h in ("accuracy", "pass@16", "maj@16", "distinct", "answers", "entropy", "ECE"):
        assert h in text, h
    assert "[0.34, 0.5]" in text
    rows = {line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")}
    assert set(names) <= rows


def test_presets_table_shows_every_model_id_whole():
    text = render(preset_renderables(80))
    assert_fits(text)
    for p in PRESETS.values():
        for s in p.stages:
            assert s.spec in text, s.spec
    assert "meta-llama/Llama-3.1-8B" in text and "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" in text


def test_quick_table_keeps_problem_and_model_whole():
    rows = [QuickRow("rlvr-step0040", f"builtin-s0-{i}", "29", "…", "a long answer 12345 / 7 + x + y + z", False, 24,
                     -0.06, 0.09, False) for i in range(2)]
    rows += [QuickRow("sft", f"builtin-s0-{i}", "29", "…", "29", True, 24, -0.06, 0.09, True) for i in range(2)]
    text = render(summary_table(rows, 80))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "builtin-s0-0" in text and "builtin-s0-1" in text and "rlvr-step0040" in text
    assert "(gold 29)" in text and "0/2 correct" in text and "2/2 correct" in text


@pytest.mark.parametrize("command", ["run", "weights", "behavior", "quick", "report", "presets", "lab"])
def test_help_at_80_columns(command):
    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert r.exit_code == 0, r.output
    assert_fits(r.output)
    if command in ("run", "weights", "behavior"):
        assert "--output-dir " in r.output and "--output_dir" in r.output


def test_underscore_spellings_still_work(tmp_path):
    r = CliRunner().invoke(app, ["weights", "--layer_pattern", "(", "--output_dir", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--layer-pattern '(' is not a valid regular expression" in r.output, r.output
