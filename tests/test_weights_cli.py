"""End to end through the CLI: every output file, with contents checked against the scan."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from ptlens.cli import app
from weights_helpers import base_weights, write_lineage

runner = CliRunner()


def test_weights_cli_writes_every_output(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = base_weights(dtype=torch.bfloat16)
    stages = {"base": base}
    prev = base
    for label, scale, density in (("sft", 2e-2, 1.0), ("dpo", 5e-3, 1.0), ("rlvr", 5e-3, 0.2)):
        prev = {k: (v.float() + scale * v.float().abs().mean() * torch.randn(v.shape, generator=g)
                    * (torch.rand(v.shape, generator=g) < density)).bfloat16() for k, v in prev.items()}
        stages[label] = prev
    args = write_lineage(tmp_path / "lin", stages)
    out = tmp_path / "out"
    res = runner.invoke(app, ["weights", "--models", *args, "--output-dir", str(out)])
    assert res.exit_code == 0, res.output
    for f in ("weights/tensors.csv", "weights/summary.json", "weight_analysis_report.md", "sft_vs_rlvr_comparison.png",
              "weights/heatmap_rel_change.png", "weights/heatmap_changed_exact.png", "weights/layers_rel_change.png",
              "weights/layers_changed_exact.png", "weights/spectral.png"):
        p = out / f
        assert p.is_file() and p.stat().st_size > 0, f
        if f.endswith(".png"):
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "weights" / "tensors.csv").open()))
    assert len(rows) == 21 * 5
    assert {r["transition"] for r in rows} == {"base→sft", "sft→dpo", "dpo→rlvr", "base→dpo", "base→rlvr"}
    s = json.loads((out / "weights" / "summary.json").read_text())
    assert s["tensors_scanned"] == 21 and s["settings"]["spectral"] == "topk"
    assert s["bytes_read"] == sum(p.stat().st_size for c in stages for p in (tmp_path / "lin" / c).glob("*.safetensors")) \
        - sum(_header_bytes(p) for c in stages for p in (tmp_path / "lin" / c).glob("*.safetensors"))
    model = {r["transition"]: r for r in s["aggregates"]["model"]}
    rl = model["dpo→rlvr"]
    assert rl["changed_exact"] == pytest.approx(
        sum(float(r["n_changed_exact"]) for r in rows if r["transition"] == "dpo→rlvr")
        / sum(float(r["n"]) for r in rows if r["transition"] == "dpo→rlvr"))
    assert 0.1 < rl["changed_exact"] < 0.2 < model["base→sft"]["changed_exact"]
    assert rl["rel_change"] < model["base→sft"]["rel_change"]
    for key in ("model", "model_no_embed_head", "group", "kind", "layer", "layer_group", "layer_kind",
                "delta_cosine_model", "delta_cosine_group", "delta_cosine_layer"):
        assert s["aggregates"][key], key
    assert {(p["t1"], p["t2"]) for p in s["aggregates"]["delta_cosine_model"]} == {
        ("base→sft", "sft→dpo"), ("sft→dpo", "dpo→rlvr"), ("base→sft", "dpo→rlvr")}
    assert "stable_rank_wmean" in model["base→sft"] and "principal_overlap_wmean" in model["base→sft"]
    md = (out / "weight_analysis_report.md").read_text()
    for t in model:
        assert t in md
    assert "Which module groups move most" in md and "How the transitions compare" in md
    assert "weight change" in res.output.lower()


def _header_bytes(path) -> int:
    import struct

    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def test_presets_lists_every_preset():
    res = runner.invoke(app, ["presets"])
    assert res.exit_code == 0
    for name in ("tulu3-8b", "tulu3-70b", "tulu3-405b", "tulu3.1-8b", "olmo2-1b", "olmo2-7b", "olmo2-13b", "olmo2-32b",
                 "simplerl-qwen2.5-0.5b", "deepscaler-1.5b", "tiny", "tiny-trajectory"):
        assert name in res.output
