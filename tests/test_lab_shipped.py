"""The lineage shipped in ``ptlens/data/tiny``: its files, its manifest, and that transformers runs it."""

from __future__ import annotations

import json
import re

import pytest
import torch

from ptlens.behavior.grading import grade
from ptlens.resolve import resolve_lineage
from ptlens.resolve.presets import StageFacts
from ptlens.resolve.tiny import SHIPPED, shipped_manifest

MAX_SHIPPED_BYTES = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def manifest() -> dict:
    path = shipped_manifest()
    assert path is not None, f"no shipped lineage: run `ptlens lab --ship` to create {SHIPPED / 'lineage.json'}"
    return json.loads(path.read_text())


def test_manifest_lists_the_four_stages_and_their_facts(manifest):
    assert [s["label"] for s in manifest["stages"]] == ["base", "sft", "dpo", "rlvr"]
    assert manifest["quick"] is False and isinstance(manifest["seed"], int)
    for s in manifest["stages"]:
        folder = SHIPPED / s["path"]
        stage_file = json.loads((folder / "ptlens_stage.json").read_text())
        assert stage_file["facts"] == s["facts"] and stage_file["instruction"] == ""
        assert s["facts"]["learning_rate"] > 0 and "lab" in s["facts"]["source"]
        assert s["steps"] > 0 and s["tokens"] > 0 and s["wall_time_s"] > 0
    facts = {s["label"]: s["facts"] for s in manifest["stages"]}
    assert facts["sft"]["examples"] > 0 and facts["dpo"]["pairs"] > 0 and facts["rlvr"]["prompts"] > 0


def test_manifest_matches_the_files(manifest):
    listed = {t["path"] for t in manifest["trajectory"]}
    assert {s["path"] for s in manifest["stages"]} <= listed
    on_disk = {p.name for p in SHIPPED.iterdir() if p.is_dir()}
    assert on_disk == listed
    total = 0
    for t in manifest["trajectory"]:
        folder = SHIPPED / t["path"]
        size = sum(f.stat().st_size for f in folder.iterdir())
        assert size == t["size_bytes"], folder
        assert not list(folder.glob("*.bin")) and (folder / "model.safetensors").is_file()
        total += size
    assert total == manifest["size_bytes"] <= MAX_SHIPPED_BYTES


def test_shipped_checkpoints_load_with_transformers_and_generate(manifest):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for s in manifest["stages"]:
        folder = SHIPPED / s["path"]
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert model.config.model_type == "llama"
        if manifest.get("manifest_version", 1) >= 2:  # stored as released checkpoints are; ptlens computes in float32
            assert model.dtype == torch.bfloat16
        model = model.float()
        ids = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 7?"}], add_generation_prompt=True,
                                      tokenize=True, return_dict=True, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        if s["label"] == "base":  # pretraining taught worked equations in plain text, not yet to read the question
            assert re.match(r"\d+ [-+*/] \d+ = \d+\n", text), text
        elif s["label"] == "sft":  # the format; half its demonstrations answer without the working, as greedy may
            assert "\\boxed{" in text, text
        else:  # preference and RL training selected the worked answers: the task is solved
            assert text.startswith("12 + 7 = 19") and grade(text, "19").correct, (s["label"], text)


def test_default_preset_resolves_to_the_shipped_lineage(manifest):
    lineage = resolve_lineage(preset="tiny", download=False)
    assert lineage.names == ["base", "sft", "dpo", "rlvr"]
    for cp, s in zip(lineage.checkpoints, manifest["stages"]):
        assert cp.path == (SHIPPED / s["path"]).resolve()
        assert cp.facts.to_dict() == {k: v for k, v in s["facts"].items() if k in StageFacts.__dataclass_fields__}


def test_trajectory_preset_gives_convergence_curves(manifest, tmp_path):
    """tiny-trajectory: every checkpoint from base on, and the report draws the stages' convergence."""
    from ptlens.report.build import build_report
    from ptlens.report.trajectory import trajectories
    from ptlens.weights import ScanConfig, scan_lineage, write_outputs

    lineage = resolve_lineage(preset="tiny-trajectory", download=False)
    assert [c.label for c in lineage.checkpoints] == ["base", "sft", "sft", "dpo", "dpo", "rlvr", "rlvr", "rlvr"]
    assert [c.path.name for c in lineage.checkpoints] == [
        "base", "sft-step0400", "sft", "dpo-step0015", "dpo", "rlvr-step0020", "rlvr-step0040", "rlvr"]
    assert [c.facts.prompts for c in lineage.checkpoints[-3:]] == [160, 320, 480]
    assert [c.step for c in lineage.checkpoints] == [900, 400, 800, 15, 30, 20, 40, 60]
    summary = write_outputs(scan_lineage(lineage, ScanConfig(spectral="off")), tmp_path, figures=False)
    curves = {t.stage: t for t in trajectories(summary)}
    assert sorted(curves) == ["dpo", "rlvr", "sft"]
    assert curves["rlvr"].x_label == "optimizer step" and [p.x for p in curves["rlvr"].points] == [0.0, 20.0, 40.0, 60.0]
    build_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "No convergence curves" not in html and "Convergence" in (tmp_path / "report.md").read_text()


def test_shipped_lineage_records_precision_tags_and_the_rlvr_comparison(manifest):
    """A lineage shipped by the current lab (manifest 2): bf16, head_dim 32, per-tag accuracy, paired rlvr - sft."""
    if manifest.get("manifest_version", 1) < 2:
        pytest.skip("shipped lineage predates lab manifest 2 (float32, head_dim 24): rerun `ptlens lab --ship`")
    from safetensors import safe_open

    assert manifest["precision"]["stored"] == "bfloat16" and manifest["model"]["head_dim"] in (32, 64)
    for t in manifest["trajectory"]:
        with safe_open(SHIPPED / t["path"] / "model.safetensors", "pt") as f:
            assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}, t["path"]
    for s in manifest["stages"]:
        assert {"in-distribution", "held-out"} <= set(s["accuracy"]["t0.6"])
    rlvr = next(s for s in manifest["stages"] if s["label"] == "rlvr")
    assert rlvr["stored_entries_changed"] > 0 and len(rlvr["accuracy_curve"]) >= 3
    for name in ("rlvr - sft", "rlvr - dpo"):  # the RL stage does what RL does: sampled pass@1 up, interval above 0
        pair = next(c for c in manifest["comparisons"] if c["pair"] == name)
        d = pair["in-distribution"]["t0.6"]
        assert 0 < d["lo"] <= d["value"] <= d["hi"], (name, d)
    assert next(c for c in manifest["comparisons"] if c["pair"] == "rlvr - sft")["in-distribution"]["t0.6"]["value"] >= 0.10
    assert not [w for w in manifest["warnings"] if w["stage"] in ("dpo", "rlvr")], manifest["warnings"]


@pytest.mark.slow
def test_shipped_models_give_the_accuracies_the_manifest_and_readme_state(manifest):
    """Greedy accuracy recomputed from the stored checkpoints on the lab's own evaluation set equals the manifest's,
    and the README's 'lab's own evaluation' sentence quotes the manifest (greedy recomputed, sampled as stored)."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ptlens.lab.config import LabConfig
    from ptlens.lab.model import accuracy_by_tag, sample_correct
    from ptlens.lab.evaluation import eval_problems

    keys = ("seed", "levels", "held_out_levels", "eval_problems", "held_out_problems")
    problems = eval_problems(LabConfig(**{k: manifest["config"][k] for k in keys}))
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    stated = re.search(r"base (\d+)% / ([\d.]+)%, sft (\d+)% / ([\d.]+)% \([^)]*\), dpo (\d+)% / ([\d.]+)%, "
                       r"rlvr (\d+)% / ([\d.]+)%", readme)
    assert stated, "README's sentence on the lab's own evaluation was reworded"
    torch.set_num_threads(1)
    for i, s in enumerate(manifest["stages"]):
        folder = SHIPPED / s["path"]
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        greedy = accuracy_by_tag(problems, sample_correct(model, tok, problems, manifest["eval"]["max_new_tokens"],
                                                          seed=manifest["seed"]), 1)
        assert greedy == s["accuracy"]["greedy"], (s["label"], greedy, s["accuracy"]["greedy"])
        readme_greedy, readme_sampled = float(stated.group(2 * i + 1)), float(stated.group(2 * i + 2))
        # the README rounds to whole percents where the value has no half
        assert abs(readme_greedy - 100 * greedy["in-distribution"]) <= 0.5, (s["label"], readme_greedy)
        assert abs(readme_sampled - 100 * s["accuracy"]["t0.6"]["in-distribution"]) <= 0.5, (s["label"], readme_sampled)
