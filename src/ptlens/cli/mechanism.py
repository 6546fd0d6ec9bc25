"""Typer command ``ptlens mechanism``: parse flags into a :class:`MechanismConfig`, call the library, print a summary.

``cli.py`` registers it (``app.command("mechanism")(mechanism)``) and calls :func:`run_step` as
a step of ``ptlens run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ptlens.cli.kit import (DeviceOpt, ExtraArg, MaxNewTokensOpt, ModelsOpt, OutOpt, PickleOpt, PresetOpt, ProblemsOpt,
                           instruction_option, lineage_from_options, user_errors)


@user_errors
def mechanism(
    extra: Optional[List[str]] = ExtraArg,
    preset: Optional[str] = PresetOpt,
    models: Optional[List[str]] = ModelsOpt,
    problems: str = ProblemsOpt,
    limit: int = typer.Option(32, "--limit", help="Problems for the activation pass and the transplants (greedy)."),
    transitions: str = typer.Option("consecutive", "--transitions", help="consecutive, or all (also first → each later)."),
    max_new_tokens: int = MaxNewTokensOpt,
    transplant: bool = typer.Option(True, "--transplant/--no-transplant", help="Measure delta transplants (the costly part)."),
    seed: int = typer.Option(0, "--seed", help="Problem selection and bootstrap."),
    device: str = DeviceOpt,
    output_dir: Path = OutOpt,
    instruction: str = instruction_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute even when stored results match."),
    allow_pickle: bool = PickleOpt,
) -> None:
    """Which layers and modules carry each stage's behaviour change: activation diffs and delta transplants."""
    from ptlens.behavior.problems import load_problems
    from ptlens.mechanism.run import MechanismConfig

    config = MechanismConfig(problems=problems, limit=limit, transitions=transitions, max_new_tokens=max_new_tokens,
                             transplant=transplant, seed=seed, device=device, instruction=instruction or None,
                             overwrite=overwrite, allow_pickle=allow_pickle)
    config.validate()  # every option, the problems and the seed before the lineage is resolved (maybe downloaded)
    load_problems(config.problems, config.limit, config.seed)
    lineage = lineage_from_options(preset, models, extra, allow_pickle)
    run_step(lineage, config, output_dir)
    from ptlens.cli.kit import print_figures_not_drawn

    print_figures_not_drawn(output_dir, ("mechanism",))


def run_step(lineage, config, output_dir: Path) -> dict:
    """Run (or reuse) the mechanism step and print its one-screen summary; returns the stored summary."""
    from ptlens.cli.console import ConsoleReporter
    from ptlens.pipeline import run_mechanism

    return run_mechanism(lineage, config, output_dir, reporter=ConsoleReporter()).summary


