"""Bad input found before any work: one line, exit code 2, nothing written."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from ptlens.cli import app
from ptlens.cli.kit import check_output_dir
from ptlens.errors import PtlensError
from ptlens.synth import LlamaShape
from weights_helpers import SHAPE, base_weights, write_lineage

runner = CliRunner()


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    base = base_weights()
    sft = {k: v + 1e-3 for k, v in base.items()}
    args = write_lineage(root / "same", {"base": base, "sft": sft})
    deep = LlamaShape(vocab=SHAPE.vocab, hidden=SHAPE.hidden, intermediate=SHAPE.intermediate, layers=4,
                      heads=SHAPE.heads, kv_heads=SHAPE.kv_heads)
    four = write_lineage(root / "four", {"base": base_weights(shape=deep)}, shape=deep)
    two = write_lineage(root / "two", {"sft": sft})
    return root, args, four + two


def _one_error_line(res, *needles):
    assert res.exit_code == 2, res.output
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert lines and lines[0].startswith("ptlens: error:"), res.output  # no empty progress line above it
    assert "Traceback" not in res.output
    for n in needles:
        assert n in res.output, (n, res.output)


def test_output_dir_under_a_file(lineage, tmp_path):
    _, args, _ = lineage
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = runner.invoke(app, ["weights", "--models", *args, "--output-dir", str(blocker / "out")])
    _one_error_line(res, "is a file")
    assert blocker.read_text() == "x" and list(tmp_path.iterdir()) == [blocker]


def test_output_dir_in_proc(lineage):
    _, args, _ = lineage
    res = runner.invoke(app, ["weights", "--models", *args, "--output-dir", "/proc/ptlens-out"])
    _one_error_line(res, "not writable")


def test_check_output_dir_creates_nothing(tmp_path):
    check_output_dir(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(PtlensError, match="not a folder"):
        check_output_dir(tmp_path / "f")


@pytest.mark.parametrize("extra,needle", [(["--n-samples", "0"], "--n-samples must be at least 1"),
                                          (["--limit", "0"], "--limit must be at least 1"),
                                          (["--engine", "nope"], "--engine must be"),
                                          (["--problems", "missing.jsonl"], "missing.jsonl")])
def test_run_validates_every_option_before_the_scan(lineage, tmp_path, extra, needle):
    _, args, _ = lineage
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", "--models", *args, "--output-dir", str(out), *extra])
    _one_error_line(res, needle)
    assert not out.exists()


def test_missing_tensors_are_an_error_unless_allowed(lineage, tmp_path):
    _, _, mixed = lineage
    out = tmp_path / "out"
    res = runner.invoke(app, ["weights", "--models", *mixed, "--output-dir", str(out)])
    _one_error_line(res, "checkpoint sft lacks 18 tensor(s)", "model.layers.2.", "--allow-missing")
    assert not out.exists()
    res = runner.invoke(app, ["weights", "--models", *mixed, "--output-dir", str(out), "--allow-missing",
                              "--spectral", "off", "--no-figures"])
    assert res.exit_code == 0, res.output
    assert "skipped 18 tensor(s) absent from some checkpoints" in res.output


def test_regex_error_shows_the_pattern_as_typed(lineage, tmp_path):
    _, args, _ = lineage
    res = runner.invoke(app, ["weights", "--models", *args, "--layer-pattern", r"layers\.0\.(",
                              "--output-dir", str(tmp_path / "o")])
    _one_error_line(res, r"'layers\.0\.(' is not a valid regular expression")
    assert r"\\." not in res.output
    res = runner.invoke(app, ["weights", "--models", *args, "--layer-pattern", r"nothing\.here",
                              "--output-dir", str(tmp_path / "o")])
    _one_error_line(res, r"'nothing\.here' matches no tensor")
    assert not (tmp_path / "o").exists()


def test_report_and_lab_check_their_folder_first(tmp_path):
    """`ptlens report DIR` and `ptlens lab --output-dir` fail in one line before any work, like the other commands."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_error_line(runner.invoke(app, ["report", str(blocker / "res")]), "DIR", "is a file")
    pytest.importorskip("trl")
    _one_error_line(runner.invoke(app, ["lab", "--quick", "--output-dir", str(blocker / "lab")]), "is a file")
    _one_error_line(runner.invoke(app, ["report", "/proc/ptlens-res"]), "not writable")
    assert list(tmp_path.iterdir()) == [blocker] and blocker.read_text() == "x"


def test_model_path_with_spaces(lineage, tmp_path):
    """A quoted `label=SPEC` whose folder has spaces is one item, alone or beside others in one --models."""
    root, args, _ = lineage
    spaced = tmp_path / "dir with spaces"
    spaced.mkdir()
    for a in args:
        label, path = a.split("=", 1)
        (spaced / label).symlink_to(path)
    items = [f"base={spaced / 'base'}", f"sft={spaced / 'sft'}"]
    for form in (items, [" ".join(items)]):
        out = tmp_path / f"out{len(form)}"
        res = runner.invoke(app, ["weights", "--models", *form, "--output-dir", str(out), "--spectral", "off",
                                  "--no-figures"])
        assert res.exit_code == 0, res.output
        assert (out / "weights").is_dir()
    # unquoted, the shell splits the path: the stray word is named, with the way out
    res = runner.invoke(app, ["weights", "--models", f"sft={spaced}", "with", "--output-dir", str(tmp_path / "o")])
    _one_error_line(res, "got 'with'", "quote a path with spaces")


@pytest.mark.parametrize("command,flag,word", [("run", "--overwrite", "true"), ("behavior", "--overwrite", "false"),
                                               ("weights", "--allow-pickle", "yes"), ("mechanism", "--overwrite", "1")])
def test_a_value_after_a_flag_blames_the_flag(tmp_path, command, flag, word):
    out = tmp_path / "out"
    res = runner.invoke(app, [command, flag, word, "--output-dir", str(out)])
    _one_error_line(res, f"{flag} takes no value, got '{word}'")
    assert "--models" not in res.output and not out.exists()


@pytest.mark.parametrize("command", ["run", "behavior", "weights", "mechanism", "quick", "lab"])
def test_help_shows_no_type_beside_flags(command):
    res = runner.invoke(app, [command, "--help"], terminal_width=120)
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.output
    assert "<int>" in res.output or command == "lab"  # valued options keep their type


@pytest.mark.parametrize("command", [["behavior"], ["mechanism"], ["quick", "a=x", "b=y"], ["lab"]])
def test_negative_seed_fails_before_any_work(lineage, tmp_path, command):
    """numpy's bootstrap refused it after the whole sampling run, with a traceback and partial results."""
    _, args, _ = lineage
    out = tmp_path / "out"
    models = ["--models", *args] if command[0] in ("behavior", "mechanism") else []
    where = [] if command[0] == "quick" else ["--output-dir", str(out)]
    res = runner.invoke(app, [*command, *models, *where, "--seed", "-1"])
    _one_error_line(res, "--seed must be between 0 and 2**63 - 1, got -1")
    assert not out.exists()
