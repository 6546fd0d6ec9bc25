"""Typer commands ``ptlens behavior`` and ``ptlens quick``: parse flags into a config, call the library.

``cli.py`` registers them (``app.command("behavior")(behavior)``); it must do so after it has
defined ``user_errors``, since this module imports it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import typer

from ptlens.behavior.engines import AUTO_INSTRUCTION, DEFAULT_INSTRUCTION, engine_names
from ptlens.clikit import lineage_from_options, user_errors
from ptlens.errors import PtlensError

_LABEL = re.compile(r"^[A-Za-z0-9][\w.\-]*$")
INSTRUCTION_HELP = ("Appended to every question. 'auto': what the checkpoint declares in ptlens_stage.json, "
                    f"else '{DEFAULT_INSTRUCTION}'; '' for none.")


@user_errors
def behavior(
    extra: Optional[List[str]] = typer.Argument(None, metavar="[LABEL=SPEC]...", help="More lineage items (same as --models)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A named lineage (see `ptlens presets`)."),
    models: Optional[List[str]] = typer.Option(None, "--models", help="Lineage in order, as label=SPEC (SPEC: folder, hub id, id@revision)."),
    problems: str = typer.Option("builtin", "--problems", help="builtin, gsm8k, math500 or a .jsonl file with id/question/answer."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N problems (builtin: default 60)."),
    seed: int = typer.Option(0, "--seed", help="Seed for problems, sampling and bootstrap."),
    n_samples: int = typer.Option(16, "--n-samples", help="Samples per problem and model."),
    temperature: float = typer.Option(0.6, "--temperature"),
    top_p: float = typer.Option(0.95, "--top-p"),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    engine: str = typer.Option("auto", "--engine", help=f"{', '.join(engine_names())} (auto: vLLM when found and a GPU is present)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 …"),
    batch_size: int = typer.Option(64, "--batch-size", help="Sequences per generate call."),
    output_dir: Path = typer.Option(Path("analysis_results"), "--output-dir", "--output_dir", help="Where results go."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing samples made with other settings."),
    instruction: str = typer.Option(AUTO_INSTRUCTION, "--instruction", help=INSTRUCTION_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow *.bin checkpoints (loaded with weights_only=True)."),
) -> None:
    """Compare the lineage's models on the same math problems: accuracy, pass@k, diversity, calibration, length."""
    from rich.console import Console

    from ptlens.behavior.run import BehaviorConfig, run_behavior
    lineage = lineage_from_options(preset, models, extra, allow_pickle)
    config = BehaviorConfig(problems=problems, limit=limit, seed=seed, n_samples=n_samples, temperature=temperature,
                            top_p=top_p, max_new_tokens=max_new_tokens, engine=engine, device=device,
                            batch_size=batch_size, instruction=instruction or None, overwrite=overwrite,
                            allow_pickle=allow_pickle)
    result = run_behavior(lineage, config, output_dir, progress=True)
    _print_summary(Console(), result.results)
    Console(stderr=True).print(f"results: {result.results_path}\nsamples: {result.samples_path}", markup=False, highlight=False)


def _print_summary(console, results: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    ks = results["ks"]
    t = Table(title="behaviour (95% bootstrap intervals over problems)", title_justify="left")
    cols = ["accuracy", f"pass@{ks[-1]}", f"maj@{ks[-1]}", "distinct_answers", "token_entropy", "length_mean", "ece"]
    t.add_column("model")
    for c in cols:
        t.add_column(c, justify="right")
    for name, m in results["models"].items():
        cells = []
        for c in cols:
            e = m["metrics"][c]
            ci = f" [dim][{e['lo']:.3g}, {e['hi']:.3g}][/]" if e["lo"] is not None else ""
            cells.append(f"{e['value']:.3g}{ci}")
        t.add_row(escape(name), *cells)
    console.print(t)


def _quick_item(spec: str, fallback: str) -> str:
    """``label=SPEC`` passes through; a bare SPEC gets its last path part (or A/B) as label."""
    label, sep, rest = spec.partition("=")
    if sep and _LABEL.match(label) and not Path(spec).exists():
        return spec
    base = spec.rstrip("/").split("@")[0].rsplit("/", 1)[-1]
    return f"{base if _LABEL.match(base) else fallback}={spec}"


@user_errors
def quick(
    a: str = typer.Argument(..., help="First model: folder, hub id or id@revision (optionally label=SPEC)."),
    b: str = typer.Argument(..., help="Second model."),
    problems: str = typer.Option("builtin", "--problems", help="builtin, gsm8k, math500 or a .jsonl file."),
    limit: int = typer.Option(3, "--limit", help="How many problems."),
    seed: int = typer.Option(0, "--seed"),
    temperature: float = typer.Option(0.6, "--temperature"),
    top_p: float = typer.Option(0.95, "--top-p"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    device: str = typer.Option("auto", "--device"),
    instruction: str = typer.Option(AUTO_INSTRUCTION, "--instruction", help=INSTRUCTION_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow *.bin checkpoints (loaded with weights_only=True)."),
) -> None:
    """A fast first look: two models answer a few problems side by side, live, then a one-screen table."""
    from rich.console import Console

    from ptlens.behavior.problems import load_problems
    from ptlens.behavior.quick import QuickConfig, quick_compare, summary_table
    from ptlens.resolve import resolve_lineage

    if max_new_tokens < 1:
        raise PtlensError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    lineage = resolve_lineage(models=[_quick_item(a, "A"), _quick_item(b, "B")], allow_pickle=allow_pickle)
    config = QuickConfig(problems=problems, limit=limit, seed=seed, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, device=device, instruction=instruction or None,
                         allow_pickle=allow_pickle)
    probs = load_problems(problems, limit, seed)
    console = Console()
    rows = quick_compare(lineage, probs, config, console=console)
    console.print(summary_table(rows))
