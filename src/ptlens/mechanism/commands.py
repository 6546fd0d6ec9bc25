"""Typer command ``ptlens mechanism``: parse flags into a :class:`MechanismConfig`, call the library, print a summary.

``cli.py`` registers it (``app.command("mechanism")(mechanism)``) and calls :func:`run_step` as
a step of ``ptlens run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ptlens.behavior.engines import AUTO_INSTRUCTION
from ptlens.clikit import console, lineage_from_options, user_errors


@user_errors
def mechanism(
    extra: Optional[List[str]] = typer.Argument(None, metavar="[LABEL=SPEC]...", help="More lineage items (same as --models)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A named lineage (see `ptlens presets`)."),
    models: Optional[List[str]] = typer.Option(None, "--models", help="Lineage in order, as label=SPEC (SPEC: folder, hub id, id@revision)."),
    problems: str = typer.Option("builtin", "--problems", help="builtin, gsm8k, math500 or a .jsonl file with id/question/answer."),
    limit: int = typer.Option(32, "--limit", help="Problems for the activation pass and the transplants (greedy)."),
    transitions: str = typer.Option("consecutive", "--transitions", help="consecutive, or all (also first → each later)."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    transplant: bool = typer.Option(True, "--transplant/--no-transplant", help="Measure delta transplants (the costly part)."),
    seed: int = typer.Option(0, "--seed", help="Problem selection and bootstrap."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 …"),
    output_dir: Path = typer.Option(Path("analysis_results"), "--output-dir", "--output_dir", help="Where results go."),
    instruction: str = typer.Option(AUTO_INSTRUCTION, "--instruction", help="Appended to every question ('auto': what the checkpoint declares)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute even when stored results match."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow *.bin checkpoints (loaded with weights_only=True)."),
) -> None:
    """Which layers and modules carry each stage's behaviour change: activation diffs and delta transplants."""
    from ptlens.mechanism.run import MechanismConfig

    lineage = lineage_from_options(preset, models, extra, allow_pickle)
    config = MechanismConfig(problems=problems, limit=limit, transitions=transitions, max_new_tokens=max_new_tokens,
                             transplant=transplant, seed=seed, device=device, instruction=instruction or None,
                             overwrite=overwrite, allow_pickle=allow_pickle)
    run_step(lineage, config, output_dir)


def run_step(lineage, config, output_dir: Path) -> dict:
    """Run (or reuse) the mechanism step and print its one-screen summary; returns the stored summary."""
    from ptlens.mechanism.run import run_mechanism

    with console.status("mechanism …") as status:
        result = run_mechanism(lineage, config, output_dir, progress=lambda m: status.update(m))
    if result.reused:
        console.print(f"[dim]mechanism: reusing {output_dir}/mechanism/summary.json (same lineage and settings)[/]")
    print_summary(result.summary, output_dir)
    return result.summary


def print_summary(summary: dict, output_dir: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ptlens.mechanism.report import mechanism_record

    rec = mechanism_record(summary)
    out = Console()
    t = Table(title="Mechanism: which part carries each transition's change", title_justify="left")
    for c in ("transition", "first layer that moves", "largest logit-lens KL", "carrier (KL recovered [95%])",
              "accuracy A → B"):
        t.add_column(c)
    for tr in rec["transitions"]:
        t.add_row(escape(tr["transition"]), tr["first_layer_text"], tr["peak_kl_text"], escape(tr["carrier_text"]),
                  tr["accuracy_text"])
    out.print(t)
    console.print(f"{summary.get('seconds', 0):.1f} s → {output_dir}/mechanism/ (layers.csv, adl.json, transplant.csv)",
                  markup=False, highlight=False)
