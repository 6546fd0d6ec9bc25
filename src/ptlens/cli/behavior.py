"""Typer commands ``ptlens behavior`` and ``ptlens quick``: parse flags into a config, call the library.

``cli.py`` registers them (``app.command("behavior")(behavior)``); it must do so after it has
defined ``user_errors``, since this module imports it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import typer

from ptlens.behavior.engines import engine_names
from ptlens.cli.kit import (DeviceOpt, ExtraArg, MaxNewTokensOpt, NSamplesOpt, ModelsOpt, OutOpt, OverwriteOpt, PickleOpt, PresetOpt,
                           ProblemsOpt, SeedOpt, TemperatureOpt, TopPOpt, instruction_option, lineage_from_options,
                           user_errors)
from ptlens.errors import PtlensError
from ptlens.pipeline import validate_behavior  # noqa: F401  (re-exported: it lived here)

_LABEL = re.compile(r"^[A-Za-z0-9][\w.\-]*$")
InstructionOpt = instruction_option()


@user_errors
def behavior(
    extra: Optional[List[str]] = ExtraArg,
    preset: Optional[str] = PresetOpt,
    models: Optional[List[str]] = ModelsOpt,
    problems: str = ProblemsOpt,
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N problems (builtin: default 60)."),
    seed: int = SeedOpt,
    n_samples: int = NSamplesOpt,
    temperature: float = TemperatureOpt,
    top_p: float = TopPOpt,
    max_new_tokens: int = MaxNewTokensOpt,
    engine: str = typer.Option("auto", "--engine", help=f"{', '.join(engine_names())} (auto: vLLM when found and a GPU is present)."),
    device: str = DeviceOpt,
    batch_size: int = typer.Option(64, "--batch-size", help="Sequences per generate call."),
    output_dir: Path = OutOpt,
    overwrite: bool = OverwriteOpt,
    instruction: str = InstructionOpt,
    allow_pickle: bool = PickleOpt,
) -> None:
    """Compare the lineage's models on the same math problems: accuracy, pass@k, diversity, calibration, length."""
    from rich.console import Console

    from ptlens.behavior.config import BehaviorConfig
    from ptlens.cli.kit import check_output_dir
    from ptlens.pipeline import Reporter, run_behavior

    config = BehaviorConfig(problems=problems, limit=limit, seed=seed, n_samples=n_samples, temperature=temperature,
                            top_p=top_p, max_new_tokens=max_new_tokens, engine=engine, device=device,
                            batch_size=batch_size, instruction=instruction or None, overwrite=overwrite,
                            allow_pickle=allow_pickle)
    validate_behavior(config)
    check_output_dir(output_dir)
    lineage = lineage_from_options(preset, models, extra, allow_pickle)
    reporter = Reporter()
    reporter.behavior_progress = True
    result = run_behavior(lineage, config, output_dir, reporter=reporter)
    print_summary(Console(), result.results)
    print_paths(result)
    from ptlens.cli.kit import print_figures_not_drawn
    from ptlens.cli.kit import print_total_time

    print_figures_not_drawn(output_dir, ("behavior",))
    print_total_time("ptlens behavior")


def print_paths(result) -> None:
    """Where the behaviour results went (stderr, beside the progress)."""
    from ptlens.cli.kit import console

    figs = f"\nfigures: {result.figures[0].parent}/" if result.figures else ""
    console.print(f"behaviour results: {result.results_path}\nsamples: {result.samples_path}{figs}", markup=False,
                  highlight=False, soft_wrap=True)


def print_summary(console, results: dict) -> None:
    """The behaviour tables (per model, intervals below each value) on ``console``."""
    for t in summary_tables(results, console.width):
        console.print(t)
    line = grading_line(results)
    if line:
        console.print(line, markup=False, highlight=False)


def grading_line(results: dict) -> str:
    """One line: each model's flexible-extract accuracy beside the strict one, and math-verify's fallbacks."""
    counts = (results.get("grading") or {}).get("models") or {}
    parts = []
    for name, m in results["models"].items():
        flex, strict = m.get("accuracy_flexible"), m["metrics"]["accuracy"]
        c = counts.get(name) or {}
        parts.append(f"{name} {strict['value']:.3g} strict / " + (f"{flex['value']:.3g} flexible" if flex else "– flexible")
                     + (f", fallbacks: timeout {c.get('fallback_timeout', 0)}, error {c.get('fallback_error', 0)}"
                        if counts else ""))
    return "grading (docs/GRADING.md): " + "; ".join(parts) if parts else ""


def _summary_columns() -> tuple[tuple[str, str], ...]:
    """(metric key, header) of the console table: the registry's behaviour metrics marked for the console."""
    from ptlens.results import registry as REG

    return tuple((m.name, m.label) for m in REG.behaviour_metrics(REG.CONSOLE))


SUMMARY_COLUMNS = _summary_columns()


def summary_tables(results: dict, width: int = 80) -> list:
    """Behaviour per model: each value with its 95% interval on the line below, in tables that fit ``width``."""
    from rich.markup import escape

    from ptlens.cli.kit import keyed_tables

    k = results["ks"][-1]
    cols, cells = [], []
    for key, header in SUMMARY_COLUMNS:
        cols.append((header.format(k=k), "right"))
    for m in results["models"].values():
        row = []
        for key, _ in SUMMARY_COLUMNS:
            e = m["metrics"][key.format(k=k)]
            ci = f"\n[dim][{e['lo']:.2g}, {e['hi']:.2g}][/]" if e.get("lo") is not None else ""
            row.append(f"{e['value']:.3g}{ci}" if e.get("value") is not None else "–")
        cells.append(row)
    return keyed_tables("behaviour (95% bootstrap intervals over problems below each value)", "model",
                        [escape(n) for n in results["models"]], cols, cells, width)


def _quick_item(spec: str, fallback: str) -> str:
    """``label=SPEC`` passes through; a bare SPEC gets its last path part (or A/B) as label."""
    label, sep, rest = spec.partition("=")
    if sep and _LABEL.match(label) and not Path(spec).exists():
        return spec
    base = spec.rstrip("/").split("@")[0].rsplit("/", 1)[-1]
    return f"{base if _LABEL.match(base) else fallback}={spec}"


def _bare_name(spec: str) -> bool:
    """A word that is neither a folder here nor a hub id (ORG/NAME) nor label=SPEC: a stage name."""
    return _LABEL.match(spec) is not None and "=" not in spec and not Path(spec).exists()


def _preset_items(preset: str, *wanted: str) -> list[str]:
    """``label=SPEC`` of each wanted stage of ``preset``: by label (the last checkpoint with it, the stage's end)
    or by its folder's or hub id's last part (``sft-step0400`` in tiny-trajectory). Only those two are resolved."""
    from ptlens.resolve import get_preset

    p = get_preset(preset)
    items = []
    for want in wanted:
        hits = [st for st in p.stages if want in (st.label, st.spec, st.spec.rstrip("/").rsplit("/", 1)[-1])]
        if not hits:
            names = ", ".join(dict.fromkeys([st.label for st in p.stages] +
                                            [st.spec.rstrip("/").rsplit("/", 1)[-1] for st in p.stages]))
            raise PtlensError(f"{want!r} is no stage of preset {preset!r}: its stages are {names} "
                              "(or give a folder, a hub id ORG/NAME, or label=SPEC)")
        items.append(f"{want if _LABEL.match(want) else hits[-1].label}={hits[-1].spec}")
    if items[0] == items[1]:
        raise PtlensError(f"{wanted[0]!r} and {wanted[1]!r} name the same checkpoint of preset {preset!r}")
    return items


@user_errors
def quick(
    a: str = typer.Argument(..., help="First model: folder, hub id or id@revision (optionally label=SPEC), or a stage "
                            "of --preset (sft, rlvr, sft-step0400 …)."),
    b: str = typer.Argument(..., help="Second model."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Name A and B by their stage in this lineage (see "
                                         "`ptlens presets`); two bare stage names without it are looked up in the "
                                         "embedded tiny lineage."),
    problems: str = ProblemsOpt,
    limit: int = typer.Option(3, "--limit", help="How many problems."),
    seed: int = SeedOpt,
    temperature: float = TemperatureOpt,
    top_p: float = TopPOpt,
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Token limit of each answer."),
    device: str = DeviceOpt,
    instruction: str = InstructionOpt,
    allow_pickle: bool = PickleOpt,
) -> None:
    """A fast first look: two models answer a few problems side by side, live, then a one-screen table.

    Examples: ptlens quick sft rlvr (the shipped tiny models) · ptlens quick sft dpo --preset tulu3-8b ·
    ptlens quick ./ckpt-a ./ckpt-b · ptlens quick sft=ORG/NAME rlvr=ORG/NAME@REVISION
    """
    from rich.console import Console

    from ptlens.behavior.problems import load_problems
    from ptlens.behavior.quick import QuickConfig, quick_compare, summary_table
    from ptlens.resolve import resolve_lineage

    if max_new_tokens < 1:
        raise PtlensError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    probs = load_problems(problems, limit, seed)  # the problems and the seed before a model is resolved
    if preset is None and all(_bare_name(x) for x in (a, b)):
        preset = "tiny"  # like `ptlens run`: the embedded lineage when no model is named by path or hub id
    items = _preset_items(preset, a, b) if preset else [_quick_item(a, "A"), _quick_item(b, "B")]
    lineage = resolve_lineage(models=items, allow_pickle=allow_pickle)
    config = QuickConfig(problems=problems, limit=limit, seed=seed, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, device=device, instruction=instruction or None,
                         allow_pickle=allow_pickle)
    console = Console()
    rows = quick_compare(lineage, probs, config, console=console)
    console.print(summary_table(rows, console.width))
