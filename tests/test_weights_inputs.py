"""Bad input: one clear line, exit code 2, no traceback, no half-written output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ptlens.cli import app
from ptlens.errors import ArchitectureMismatch, PtlensError
from ptlens.resolve import resolve_lineage
from ptlens.synth import LlamaShape
from weights_helpers import SHAPE, base_weights, scan, write_lineage

runner = CliRunner()


def _cli(args: list[str], out: Path):
    res = runner.invoke(app, ["weights", *args, "--output-dir", str(out), "--spectral", "off", "--no-figures"])
    return res


def _assert_user_error(res, out: Path, *needles: str):
    text = res.output
    assert res.exit_code == 2, text
    assert "Traceback" not in text
    assert "ptlens: error:" in text
    for n in needles:
        assert n in text, text
    assert not (out / "weights" / "summary.json").exists()
    assert not (out / "weight_analysis_report.md").exists()


@pytest.fixture
def good(tmp_path):
    base = base_weights()
    return write_lineage(tmp_path / "good", {"base": base, "sft": {k: v * 1.01 for k, v in base.items()}})


def test_path_that_does_not_exist(tmp_path, good):
    _assert_user_error(_cli(["--models", good[0], f"sft={tmp_path}/nope/model"], tmp_path / "o"), tmp_path / "o",
                       "no such folder")


def test_folder_that_is_not_a_model(tmp_path, good):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    _assert_user_error(_cli(["--models", good[0], f"sft={tmp_path / 'empty'}"], tmp_path / "o"), tmp_path / "o",
                       "not a model folder")


def test_index_naming_missing_shard(tmp_path, good):
    base = base_weights()
    args = write_lineage(tmp_path / "sh", {"sft": base}, shards=2)
    (tmp_path / "sh" / "sft" / "model-00002-of-00002.safetensors").unlink()
    _assert_user_error(_cli(["--models", good[0], args[0]], tmp_path / "o"), tmp_path / "o",
                       "model-00002-of-00002.safetensors")


def test_truncated_safetensors(tmp_path, good):
    args = write_lineage(tmp_path / "tr", {"sft": base_weights()})
    f = tmp_path / "tr" / "sft" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    _assert_user_error(_cli(["--models", good[0], args[0]], tmp_path / "o"), tmp_path / "o", "truncated")


def test_corrupt_header(tmp_path, good):
    args = write_lineage(tmp_path / "co", {"sft": base_weights()})
    f = tmp_path / "co" / "sft" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:20] = b"\xff" * 12
    f.write_bytes(bytes(data))
    _assert_user_error(_cli(["--models", good[0], args[0]], tmp_path / "o"), tmp_path / "o", "corrupt")


def test_architecture_mismatch_lists_tensors(tmp_path, good):
    from dataclasses import replace

    other = replace(SHAPE, intermediate=128)
    args = write_lineage(tmp_path / "mm", {"sft": base_weights(shape=other)}, shape=other)
    res = _cli(["--models", good[0], args[0]], tmp_path / "o")
    _assert_user_error(res, tmp_path / "o", "architecture mismatch", "mlp.up_proj.weight", "(96, 64)", "(128, 64)")
    with pytest.raises(ArchitectureMismatch):
        scan([good[0], args[0]])


def test_pickle_only_refused_then_allowed(tmp_path, good):
    folder = tmp_path / "pk"
    folder.mkdir()
    w = {k: v * 1.01 for k, v in base_weights().items()}
    torch.save(w, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(SHAPE.config()))
    _assert_user_error(_cli(["--models", good[0], f"sft={folder}"], tmp_path / "o"), tmp_path / "o", "--allow-pickle")
    res = runner.invoke(app, ["weights", "--models", good[0], f"sft={folder}", "--allow-pickle",
                              "--output-dir", str(tmp_path / "o2"), "--spectral", "off", "--no-figures"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o2" / "weights" / "summary.json").read_text())
    assert summary["aggregates"]["model"][0]["rel_change"] == pytest.approx(0.01, rel=1e-5)


def test_bad_specs_and_flags(tmp_path, good):
    for args, needle in (
        (["--models", good[0]], "at least two"),
        (["--models", good[0], "justaspec"], "label=SPEC"),
        (["--models", good[0], good[1], "--preset", "tulu3-8b"], "either --preset or --models"),
        (["--preset", "nope"], "unknown preset"),
        (["--models", good[0], good[1], "--layer-pattern", "("], "not a valid regular expression"),
        (["--models", good[0], good[1], "--layer-pattern", "no_such_tensor"], "matches no tensor"),
        (["--models", good[0], good[1], "--device", "tpu"], "--device"),
    ):
        _assert_user_error(_cli(args, tmp_path / "o"), tmp_path / "o", needle)


def test_layer_pattern_underscore_spelling(tmp_path, good):
    res = runner.invoke(app, ["weights", "--models", *good, "--layer_pattern", r"layers\.1\.", "--output_dir",
                              str(tmp_path / "o"), "--spectral", "off", "--no-figures"])
    assert res.exit_code == 0, res.output
    rows = (tmp_path / "o" / "weights" / "tensors.csv").read_text().splitlines()
    assert len(rows) == 1 + 9 and all(".layers.1." in r for r in rows[1:])


def _hub_cache(home: Path, repo: str, revisions: dict[str, str], src: Path) -> None:
    """The layout huggingface_hub writes: refs/<rev> → commit, snapshots/<commit>/files."""
    d = home / "hub" / ("models--" + repo.replace("/", "--"))
    for ref, commit in revisions.items():
        (d / "refs").mkdir(parents=True, exist_ok=True)
        (d / "refs" / ref).write_text(commit)
        snap = d / "snapshots" / commit
        snap.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            (snap / f.name).write_bytes(f.read_bytes())


def _run_offline(args: list[str], home: Path, cwd: Path):
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "ptlens", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_hub_ids_resolve_from_cache_offline(tmp_path, good):
    home = tmp_path / "hf"
    _hub_cache(home, "org/base-model", {"main": "a" * 40}, Path(good[0].split("=", 1)[1]))
    _hub_cache(home, "org/tuned", {"main": "b" * 40, "step_200": "c" * 40}, Path(good[1].split("=", 1)[1]))
    out = tmp_path / "out"
    p = _run_offline(["weights", "--models", "base=org/base-model", "sft=org/tuned@step_200",
                      "--output-dir", str(out), "--spectral", "off", "--no-figures"], home, tmp_path)
    assert p.returncode == 0, p.stderr
    s = json.loads((out / "weights" / "summary.json").read_text())
    cps = s["lineage"]["checkpoints"]
    assert [c["repo_id"] for c in cps] == ["org/base-model", "org/tuned"]
    assert [c["resolved_revision"] for c in cps] == ["a" * 40, "c" * 40]
    assert s["aggregates"]["model"][0]["rel_change"] == pytest.approx(0.01, rel=1e-5)
    p = _run_offline(["weights", "--models", "base=org/base-model", "sft=org/not-cached",
                      "--output-dir", str(tmp_path / "o2")], home, tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "org/not-cached" in p.stderr and "HF_HUB_OFFLINE" in p.stderr
    assert not (tmp_path / "o2").exists()


def test_resolution_keeps_order_and_names_trajectories(tmp_path, good):
    folder = good[1].split("=", 1)[1]
    cps = resolve_lineage(models=[good[0], f"rlvr={folder}", f"rlvr={folder}/."])
    assert [c.name for c in cps.checkpoints] == ["base", "rlvr#1", "rlvr#2"]
    cps = resolve_lineage(models=["rlvr=org/m@step_200", "rlvr=org/m@step_400", "final=org/m"], download=False)
    assert [c.name for c in cps.checkpoints] == ["rlvr@step_200", "rlvr@step_400", "final"]
    assert [c.revision for c in cps.checkpoints] == ["step_200", "step_400", None]
    with pytest.raises(PtlensError, match="not a hub id"):
        resolve_lineage(models=[good[0], "sft=./relative/missing"])


def test_preset_may_be_a_lab_manifest(tmp_path):
    from ptlens.resolve.catalog import get_preset
    from ptlens.resolve.tiny import shipped_manifest

    tiny = get_preset("tiny")
    other = get_preset(str(shipped_manifest()))
    assert [(s.label, s.spec) for s in other.stages] == [(s.label, s.spec) for s in tiny.stages]
    assert [s.label for s in tiny.stages] == ["base", "sft", "dpo", "rlvr"]


@pytest.mark.parametrize("content,needle", [(None, "no such lineage manifest"),
                                            ("{not json", "not a ptlens lab lineage.json"),
                                            ('{"stages": [{"label": "base"}]}', "not a ptlens lab lineage.json")])
def test_bad_lab_manifest_is_a_user_error(tmp_path, content, needle):
    f = tmp_path / "lineage.json"
    if content is not None:
        f.write_text(content)
    out = tmp_path / "out"
    _assert_user_error(_cli(["--preset", str(f)], out), out, str(f), needle)
