"""Typer commands ``ptlens behavior`` and ``ptlens quick``: parse flags into a config, call the library.

``cli.py`` registers them (``app.command("behavior")(behavior)``); it must do so after it has
defined ``user_errors``, since this module imports it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import typer

from ptlens.behavior.config import BehaviorConfig
from ptlens.behavior.quick import QuickConfig
from ptlens.cli.kit import ExtraArg, ModelsOpt, PresetOpt, lineage_from_options, option, user_errors
from ptlens.errors import PtlensError
from ptlens.pipeline import RunConfig

_LABEL = re.compile(r"^[A-Za-z0-9][\w.\-]*$")


@user_errors
def behavior(
    extra: Optional[List[str]] = ExtraArg,
    preset: Optional[str] = PresetOpt,
    models: Optional[List[str]] = ModelsOpt,
    problems: str = option(BehaviorConfig, "problems"),
    limit: Optional[int] = option(BehaviorConfig, "limit"),
    seed: int = option(BehaviorConfig, "seed"),
    n_samples: int = option(BehaviorConfig, "n_samples"),
    temperature: float = option(BehaviorConfig, "temperature"),
    top_p: float = option(BehaviorConfig, "top_p"),
    max_new_tokens: int = option(BehaviorConfig, "max_new_tokens"),
    engine: str = option(BehaviorConfig, "engine"),
    device: str = option(BehaviorConfig, "device"),
    batch_size: int = option(BehaviorConfig, "batch_size"),
    output_dir: Path = option(RunConfig, "output_dir"),
    overwrite: bool = option(BehaviorConfig, "overwrite"),
    instruction: str = option(BehaviorConfig, "instruction"),
    allow_pickle: bool = option(BehaviorConfig, "allow_pickle"),
) -> None:
    """Compare the lineage's models on the same math problems: accuracy, pass@k, diversity, calibration, length."""
    from rich.console import Console

    from ptlens.pipeline import Reporter, preflight, run_behavior

    config = BehaviorConfig(problems=problems, limit=limit, seed=seed, n_samples=n_samples, temperature=temperature,
                            top_p=top_p, max_new_tokens=max_new_tokens, engine=engine, device=device,
                            batch_size=batch_size, instruction=instruction or None, overwrite=overwrite,
                            allow_pickle=allow_pickle)
    preflight(config, output_dir=output_dir)
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
    problems: str = option(QuickConfig, "problems"),
    limit: int = option(QuickConfig, "limit"),
    seed: int = option(QuickConfig, "seed"),
    temperature: float = option(QuickConfig, "temperature"),
    top_p: float = option(QuickConfig, "top_p"),
    max_new_tokens: int = option(QuickConfig, "max_new_tokens"),
    device: str = option(QuickConfig, "device"),
    instruction: str = option(QuickConfig, "instruction"),
    allow_pickle: bool = option(QuickConfig, "allow_pickle"),
) -> None:
    """A fast first look: two models answer a few problems side by side, live, then a one-screen table.

    Examples: ptlens quick sft rlvr (the shipped tiny models) · ptlens quick sft dpo --preset tulu3-8b ·
    ptlens quick ./ckpt-a ./ckpt-b · ptlens quick sft=ORG/NAME rlvr=ORG/NAME@REVISION
    """
    from rich.console import Console

    from ptlens.behavior.problems import load_problems
    from ptlens.behavior.quick import quick_compare, summary_table
    from ptlens.pipeline import preflight
    from ptlens.resolve import resolve_lineage

    config = QuickConfig(problems=problems, limit=limit, seed=seed, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, device=device, instruction=instruction or None,
                         allow_pickle=allow_pickle)
    preflight(config)  # every option and the problems before a model is resolved
    probs = load_problems(problems, limit, seed)
    if preset is None and all(_bare_name(x) for x in (a, b)):
        preset = "tiny"  # like `ptlens run`: the embedded lineage when no model is named by path or hub id
    items = _preset_items(preset, a, b) if preset else [_quick_item(a, "A"), _quick_item(b, "B")]
    lineage = resolve_lineage(models=items, allow_pickle=allow_pickle)
    console = Console()
    rows = quick_compare(lineage, probs, config, console=console)
    console.print(summary_table(rows, console.width))
