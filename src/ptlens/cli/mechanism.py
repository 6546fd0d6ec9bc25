"""Typer command ``ptlens mechanism``: parse flags into a :class:`MechanismConfig`, call the library, print a summary.

``cli.py`` registers it (``app.command("mechanism")(mechanism)``) and calls :func:`run_step` as
a step of ``ptlens run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from ptlens.cli.kit import ExtraArg, ModelsOpt, PresetOpt, lineage_from_options, option, user_errors
from ptlens.mechanism.config import MechanismConfig
from ptlens.pipeline import RunConfig


@user_errors
def mechanism(
    extra: Optional[List[str]] = ExtraArg,
    preset: Optional[str] = PresetOpt,
    models: Optional[List[str]] = ModelsOpt,
    problems: str = option(MechanismConfig, "problems"),
    limit: int = option(MechanismConfig, "limit"),
    transitions: str = option(MechanismConfig, "transitions"),
    max_new_tokens: int = option(MechanismConfig, "max_new_tokens"),
    transplant: bool = option(MechanismConfig, "transplant"),
    seed: int = option(MechanismConfig, "seed"),
    device: str = option(MechanismConfig, "device"),
    output_dir: Path = option(RunConfig, "output_dir"),
    instruction: str = option(MechanismConfig, "instruction"),
    overwrite: bool = option(MechanismConfig, "overwrite"),
    allow_pickle: bool = option(MechanismConfig, "allow_pickle"),
) -> None:
    """Which layers and modules carry each stage's behaviour change: activation diffs and delta transplants."""
    from ptlens.pipeline import preflight

    config = MechanismConfig(problems=problems, limit=limit, transitions=transitions, max_new_tokens=max_new_tokens,
                             transplant=transplant, seed=seed, device=device, instruction=instruction or None,
                             overwrite=overwrite, allow_pickle=allow_pickle)
    preflight(config, output_dir=output_dir)  # every option, the problems and the folder before the lineage is resolved
    lineage = lineage_from_options(preset, models, extra, allow_pickle)
    run_step(lineage, config, output_dir)
    from ptlens.cli.kit import print_figures_not_drawn

    print_figures_not_drawn(output_dir, ("mechanism",))


def run_step(lineage, config, output_dir: Path) -> dict:
    """Run (or reuse) the mechanism step and print its one-screen summary; returns the stored summary."""
    from ptlens.cli.console import ConsoleReporter
    from ptlens.pipeline import run_mechanism

    return run_mechanism(lineage, config, output_dir, reporter=ConsoleReporter()).summary


