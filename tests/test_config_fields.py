"""One source per option: a config field's default, help and check are what the library checks, what `--help` shows
and what the CLI answers (ptlens.config_fields, ptlens.cli.kit.option), and every command runs the preflight first."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import ptlens.pipeline
from ptlens.behavior.config import BehaviorConfig
from ptlens.behavior.quick import QuickConfig
from ptlens.cli import app
from ptlens.cli.kit import option
from ptlens.config_fields import KEY, at_least, check_fields, like, rule, setting, setting_of
from ptlens.errors import PtlensError
from ptlens.lab.config import LabConfig
from ptlens.mechanism.config import MechanismConfig
from ptlens.pipeline import RunConfig, preflight
from ptlens.weights import ScanConfig

runner = CliRunner()
CONFIGS = (ScanConfig, BehaviorConfig, MechanismConfig, QuickConfig, LabConfig, RunConfig)

BAD = [  # (config, field, bad value, the line a user gets)
    (ScanConfig, "spectral", "some", "--spectral must be off, topk or full, not 'some'"),
    (ScanConfig, "k", 0, "--k must be at least 1"),
    (ScanConfig, "tolerance", -1.0, "--tolerance must be non-negative"),
    (ScanConfig, "alpha", 1.5, "--alpha must lie in (0, 1)"),
    (ScanConfig, "layer_pattern", "(", "--layer-pattern '(' is not a valid regular expression "
                                       "(missing ), unterminated subpattern at position 0)"),
    (ScanConfig, "device", "tpu", "--device must be cpu, cuda or auto, not 'tpu'"),
    (ScanConfig, "workers", 0, "--workers must be at least 1, got 0"),
    (BehaviorConfig, "limit", 0, "--limit must be at least 1, got 0"),
    (BehaviorConfig, "seed", -1, "--seed must be between 0 and 2**63 - 1, got -1"),
    (BehaviorConfig, "n_samples", 0, "--n-samples must be at least 1, got 0"),
    (BehaviorConfig, "temperature", -0.5, "--temperature must be >= 0, got -0.5"),
    (BehaviorConfig, "top_p", 1.5, "--top-p must be in (0, 1], got 1.5"),
    (BehaviorConfig, "max_new_tokens", 0, "--max-new-tokens must be at least 1, got 0: a model cannot answer in 0 tokens"),
    (BehaviorConfig, "engine", "tgi", "--engine must be one of auto, hf, vllm, ray-vllm, got 'tgi'"),
    (BehaviorConfig, "scoring", "vllm", "scoring must be auto, engine or hf, got 'vllm'"),
    (BehaviorConfig, "batch_size", 0, "--batch-size must be at least 1, got 0"),
    (MechanismConfig, "limit", 0, "--limit must be at least 1, got 0"),
    (MechanismConfig, "seed", -1, "--seed must be between 0 and 2**63 - 1, got -1"),
    (MechanismConfig, "transitions", "some", "--transitions must be consecutive or all, got 'some'"),
    (MechanismConfig, "max_new_tokens", 0, "--max-new-tokens must be at least 1, got 0"),
    (MechanismConfig, "plain_prompts", 17, "plain_prompts must be in 0..16"),
    (MechanismConfig, "adl_k", 0, "adl_k must be at least 1, got 0"),
    (MechanismConfig, "blocks", 0, "blocks must be at least 1, got 0"),
    (QuickConfig, "limit", 0, "--limit must be at least 1, got 0"),
    (QuickConfig, "seed", -1, "--seed must be between 0 and 2**63 - 1, got -1"),
    (QuickConfig, "temperature", -0.5, "--temperature must be >= 0, got -0.5"),
    (QuickConfig, "top_p", 1.5, "--top-p must be in (0, 1], got 1.5"),
    (QuickConfig, "max_new_tokens", 0, "--max-new-tokens must be at least 1, got 0"),
    (LabConfig, "seed", -1, "--seed must be between 0 and 2**63 - 1, got -1"),
    (LabConfig, "threads", 0, "--threads must be at least 1, got 0"),
]


def _commands() -> dict:
    """Command name → the function typer calls (its parameters' defaults are the OptionInfos)."""
    return {c.name or c.callback.__name__: c.callback for c in app.registered_commands}


def _options(fn) -> dict:
    """Parameter name → typer OptionInfo of a command."""
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if isinstance(p.default, typer.models.OptionInfo)}


def _cli_cases():
    """(command, flag, value, message) for every BAD field that a command builds its option from."""
    out = []
    for name, fn in _commands().items():
        for info in _options(fn).values():
            for cls, field, value, message in BAD:
                if getattr(info, "ptlens_field", None) == (cls, field):
                    out.append(pytest.param(name, info.param_decls[0], value, message, id=f"{name}{info.param_decls[0]}"))
    return out


def test_every_checked_field_has_a_case():
    checked = {(cls, f.name) for cls in CONFIGS for f in dataclasses.fields(cls)
               if KEY in f.metadata and f.metadata[KEY].check is not None}
    assert checked == {(cls, field) for cls, field, _, _ in BAD}


@pytest.mark.parametrize("cls,field,value,message", BAD, ids=[f"{c.__name__}.{f}" for c, f, _, _ in BAD])
def test_each_check_fires_from_the_library(cls, field, value, message):
    with pytest.raises(PtlensError) as e:
        cls(**{field: value}).validate()
    assert str(e.value) == message
    cls().validate()  # the defaults pass


@pytest.mark.parametrize("command,flag,value,message", _cli_cases())
def test_each_check_fires_from_the_cli_before_any_work(tmp_path, command, flag, value, message):
    out = tmp_path / "out"
    args = [command, flag, str(value)]
    args += ["a=x", "b=y"] if command == "quick" else ["--output-dir", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert [line for line in res.output.splitlines() if line.strip()] == [f"ptlens: error: {message}"]
    assert not out.exists()


def test_the_cli_cases_cover_every_command_and_flag():
    cases = {(p.values[0], p.values[1]) for p in _cli_cases()}
    assert {c for c, _ in cases} == {"weights", "run", "behavior", "quick", "mechanism", "lab"}
    assert ("run", "--n-samples") in cases and ("run", "--device") in cases and ("lab", "--threads") in cases


def test_cli_options_take_default_flag_and_help_from_their_field():
    from typer.main import get_command

    group = get_command(app)
    seen = 0
    for name, fn in _commands().items():
        params = {p.name: p for p in group.commands[name].params}
        for pname, info in _options(fn).items():
            if not hasattr(info, "ptlens_field"):
                continue
            s = setting_of(*info.ptlens_field)
            p = params[pname]
            assert p.help == s.help and f"{p.opts[0]}" == s.flag.split("/")[0], (name, pname)
            if (name, pname) == ("lab", "output_dir"):
                assert p.default is None  # None tells --ship whether a folder was given; LabConfig's is the default
            else:
                assert p.default == s.default, (name, pname)
            seen += 1
    assert seen >= 60


def test_options_named_like_a_field_are_built_from_it():
    """A hand-written option with a config field's flag would drift from it; the few left are no config's field."""
    flags = {s.flag for cls in CONFIGS for f in dataclasses.fields(cls) if (s := f.metadata.get(KEY)) and s.flag}
    own = {("weights", "--overwrite")}  # run_weights' keyword: restart an interrupted scan, not a config field
    for name, fn in _commands().items():
        for info in _options(fn).values():
            if not hasattr(info, "ptlens_field") and info.param_decls and info.param_decls[0] in flags:
                assert (name, info.param_decls[0]) in own, (name, info.param_decls)


@pytest.mark.parametrize("flag", ["--device", "--n-samples", "--max-new-tokens", "--problems", "--allow-pickle",
                                  "--output-dir", "--instruction", "--temperature", "--top-p", "--engine", "--spectral",
                                  "--allow-missing", "--executor"])
def test_an_option_shared_by_commands_has_one_help(flag):
    helps = {name: info.help for name, fn in _commands().items() for info in _options(fn).values()
             if info.param_decls and info.param_decls[0] == flag and name != "lab"}
    assert len(helps) >= 2 or flag in ("--n-samples", "--engine", "--executor", "--allow-missing"), helps
    assert len(set(helps.values())) == 1, helps


def test_engine_help_names_every_engine():
    from ptlens.behavior.engines import engine_names

    assert setting_of(BehaviorConfig, "engine").help.startswith(", ".join(engine_names()) + " (auto: ")


class Boom(PtlensError):
    pass


def _boom(*configs, **kw):
    raise Boom("preflight ran")


@pytest.mark.parametrize("args", [["run"], ["weights"], ["behavior"], ["mechanism"], ["quick", "a=x", "b=y"],
                                  ["lab", "--quick"], ["report"]], ids=lambda a: a[0])
def test_every_command_calls_the_preflight_before_any_work(tmp_path, monkeypatch, args):
    out = tmp_path / "out"
    started = []
    monkeypatch.setattr(ptlens.pipeline, "preflight", _boom)
    monkeypatch.setattr(ptlens.pipeline, "start_weight_figure_pool", lambda: started.append(1))
    monkeypatch.setattr(ptlens.pipeline, "lineage_of", lambda *a, **k: started.append(2))
    where = [] if args[0] == "quick" else [str(out)] if args[0] == "report" else ["--output-dir", str(out)]
    res = runner.invoke(app, [*args, *where])
    assert res.exit_code == 2 and res.output.strip() == "ptlens: error: preflight ran", res.output
    assert not out.exists() and not started


def test_preflight_checks_a_run_config_its_steps_and_its_folder(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(PtlensError, match="^--n-samples must be at least 1, got 0$"):
        preflight(RunConfig.from_options(tmp_path / "o", n_samples=0))
    with pytest.raises(PtlensError, match="^--transitions must be consecutive or all"):
        preflight(RunConfig(mechanism=MechanismConfig(transitions="some")))
    with pytest.raises(PtlensError, match="^--problems 'nope': expected builtin"):
        preflight(RunConfig.from_options(tmp_path / "o", problems="nope"))
    with pytest.raises(PtlensError, match="is not a folder"):
        preflight(RunConfig(output_dir=tmp_path / "file"))
    with pytest.raises(PtlensError, match="^DIR .*is not a folder"):
        preflight(output_dir=tmp_path / "file", what="DIR")
    cfg = RunConfig.from_options(tmp_path / "o", mechanism=False)
    preflight(cfg)
    assert not isinstance(cfg.executor, str) and list(tmp_path.iterdir()) == [tmp_path / "file"]


def test_settings_make_fields_that_carry_their_check():
    @dataclass
    class Toy:
        n: int = setting(2, help="How many.", flag="--n", check=at_least(1, " (none is nothing)"))
        name: str = setting("a", help="A or B.", check=rule(lambda v: v in "ab", "{name} must be a or b, got {value!r}"))
        tags: list = setting(help="Tags.", default_factory=list)

    @dataclass
    class Other:
        n: int = like(Toy, "n", default=5)

    assert Toy().tags == [] and Toy().tags is not Toy().tags and dataclasses.asdict(Toy()) == {"n": 2, "name": "a", "tags": []}
    check_fields(Toy())
    with pytest.raises(PtlensError, match=r"^--n must be at least 1, got 0 \(none is nothing\)$"):
        check_fields(Toy(n=0))
    with pytest.raises(PtlensError, match="^name must be a or b, got 'c'$"):
        check_fields(Toy(name="c"))
    assert Other().n == 5 and setting_of(Other, "n").help == "How many."
    with pytest.raises(PtlensError, match="^--n must be at least 1, got -1"):
        check_fields(Other(n=-1))
    info = option(Other, "n")
    assert (info.default, info.param_decls, info.help) == (5, ("--n",), "How many.")
    with pytest.raises(KeyError, match="no setting"):
        setting_of(LabConfig, "levels")
