"""``ptlens lab --quick --controlled`` end to end: its checkpoints form lineages ptlens resolves and scans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

pytest.importorskip("trl")
pytest.importorskip("datasets")

from ptlens.cli.lab import lab  # noqa: E402
from ptlens.resolve import resolve_lineage  # noqa: E402

pytestmark = pytest.mark.slow
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                    "generation_config.json", "ptlens_stage.json")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lab") / "quick"
    app = typer.Typer()
    app.command()(lab)
    result = CliRunner().invoke(app, ["--quick", "--controlled", "--output-dir", str(out), "--seed", "3", "--threads", "1"])
    assert result.exit_code == 0, result.output
    return out


def _manifest(path: Path) -> dict:
    return json.loads(path.read_text())


def test_manifest_matches_the_files(quick_run):
    data = _manifest(quick_run / "lineage.json")
    assert [s["label"] for s in data["stages"]] == ["base", "sft", "dpo", "rlvr"]
    assert data["seed"] == 3 and data["quick"] is True
    for s in data["stages"]:
        folder = quick_run / s["path"]
        for name in CHECKPOINT_FILES:
            assert (folder / name).is_file(), folder / name
        stage_file = json.loads((folder / "ptlens_stage.json").read_text())
        assert stage_file["facts"] == s["facts"] and stage_file["label"] == s["label"]
        assert stage_file["instruction"] == "" and stage_file["final"] is True
        assert s["steps"] > 0 and s["tokens"] > 0 and s["wall_time_s"] > 0 and s["seed"] == 3
        assert set(s["accuracy"]) == {"greedy", "t0.6"}
        assert set(s["accuracy"]["greedy"]) == {"in-distribution", "held-out", "level1", "level2", "level3"}
    facts = {s["label"]: s["facts"] for s in data["stages"]}
    assert facts["sft"]["examples"] > 0 and facts["dpo"]["pairs"] > 0
    assert facts["rlvr"]["prompts"] > 0 and facts["rlvr"]["episodes"] >= facts["rlvr"]["prompts"]
    listed = {t["path"] for t in data["trajectory"]}
    assert {s["path"] for s in data["stages"]} <= listed
    assert all((quick_run / p / "model.safetensors").is_file() for p in listed)
    on_disk = {p.name for p in quick_run.iterdir() if (p / "ptlens_stage.json").is_file()}
    assert on_disk == listed
    rl_steps = [t["step"] for t in data["trajectory"] if t["label"] == "rlvr"]
    assert len(rl_steps) >= 2 and rl_steps == sorted(rl_steps)


def test_quick_checkpoints_resolve_as_a_lineage_with_lab_facts(quick_run):
    data = _manifest(quick_run / "lineage.json")
    models = [f"{s['label']}={quick_run / s['path']}" for s in data["stages"]]
    lineage = resolve_lineage(models=models, download=False)
    assert lineage.names == ["base", "sft", "dpo", "rlvr"]
    by_name = {c.name: c for c in lineage.checkpoints}
    assert by_name["sft"].facts.examples == data["stages"][1]["facts"]["examples"]
    assert by_name["rlvr"].facts.algorithm.startswith("GRPO")
    assert "lab" in by_name["base"].facts.source


def test_weights_scan_reads_the_quick_lineage(quick_run):
    from safetensors import safe_open

    from ptlens.weights import ScanConfig, scan_lineage

    data = _manifest(quick_run / "lineage.json")
    lineage = resolve_lineage(models=[f"{s['label']}={quick_run / s['path']}" for s in data["stages"]], download=False)
    result = scan_lineage(lineage, ScanConfig(spectral="off"))
    assert not any(result.missing.values())
    with safe_open(quick_run / "base" / "model.safetensors", "pt") as f:
        stored = set(f.keys())
    for transition in ("base→sft", "sft→dpo", "dpo→rlvr"):
        records = [r for r in result.records if r.transition == transition]
        assert {r.tensor for r in records} == stored, transition
        assert sum(r.metrics["delta_norm"] ** 2 for r in records) > 0, f"{transition} changed no weight"


def test_controlled_arms_share_start_prompts_and_examples(quick_run):
    data = _manifest(quick_run / "controlled" / "lineage.json")
    assert [s["label"] for s in data["stages"]] == ["sft", "sft-more", "grpo"]
    start = (quick_run / "controlled" / data["stages"][0]["path"]).resolve()
    assert start == (quick_run / "sft").resolve()
    sft_arm, rl_arm = data["stages"][1], data["stages"][2]
    assert sft_arm["facts"]["examples"] == rl_arm["facts"]["prompts"] == data["arms"]["prompts"]
    assert sft_arm["examples_seen"] == rl_arm["examples_seen"] == data["arms"]["examples"]
    models = [f"{s['label']}={(quick_run / 'controlled' / s['path'])}" for s in data["stages"]]
    assert resolve_lineage(models=models, download=False).names == ["sft", "sft-more", "grpo"]


def test_same_seed_gives_the_same_weights(quick_run, tmp_path):
    from safetensors.torch import load_file

    from ptlens.lab import LabConfig, run_lab

    again = run_lab(LabConfig(output_dir=tmp_path, quick=True, seed=3, threads=1)).parent
    for stage in ("base", "sft", "dpo", "rlvr"):
        a, b = load_file(quick_run / stage / "model.safetensors"), load_file(again / stage / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(a[k].equal(b[k]) for k in a), stage


def test_checkpoints_are_stored_in_bf16_and_each_stage_starts_from_the_stored_one(quick_run):
    from safetensors import safe_open

    data = _manifest(quick_run / "lineage.json")
    assert data["precision"]["stored"] == "bfloat16" and "stored" in data["precision"]["stage_start"]
    assert data["model"]["head_dim"] in (32, 64)
    for t in data["trajectory"]:
        with safe_open(quick_run / t["path"] / "model.safetensors", "pt") as f:
            assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}, t["path"]
        assert json.loads((quick_run / t["path"] / "config.json").read_text()).get("dtype") == "bfloat16"


def test_quick_rlvr_gets_a_reward_signal_and_updates_the_stored_weights(quick_run):
    """--quick must still exercise GRPO: some reward, a nonzero stored update, and no degenerate-signal warning."""
    from safetensors.torch import load_file

    data = _manifest(quick_run / "lineage.json")
    rlvr = next(s for s in data["stages"] if s["label"] == "rlvr")
    assert max(h["reward"] for h in rlvr["history"] if "reward" in h) > 0
    assert min(h["frac_reward_zero_std"] for h in rlvr["history"] if "frac_reward_zero_std" in h) < 1
    assert rlvr["stored_entries_changed"] > 0
    a, b = load_file(quick_run / "dpo" / "model.safetensors"), load_file(quick_run / "rlvr" / "model.safetensors")
    changed = sum(int((a[k] != b[k]).sum()) for k in a) / sum(v.numel() for v in a.values())
    assert changed == pytest.approx(rlvr["stored_entries_changed"], abs=1e-6)
    assert not [w for w in data["warnings"] if w["stage"] == "rlvr"], data["warnings"]
    curve = rlvr["accuracy_curve"]
    assert [c["step"] for c in curve][0] == 0 and curve[-1]["step"] == rlvr["steps"] and len(curve) >= 3
    pair = next(c for c in data["comparisons"] if c["pair"] == "rlvr - sft")
    d = pair["in-distribution"]["t0.6"]
    assert d["lo"] <= d["value"] <= d["hi"] and pair["in-distribution"]["problems"] == data["eval"]["problems"]
