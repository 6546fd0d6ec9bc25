"""The ``ptlens`` command: a thin typer layer; every command builds a config and calls the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ptlens import threads
from ptlens.behavior.config import BehaviorConfig
from ptlens.cli.console import ConsoleReporter, print_weight_summary
from ptlens.cli.kit import (ExtraArg, ModelsOpt, PresetOpt, lineage_from_options, model_items, option,
                           print_figures_not_drawn, user_errors)
from ptlens.pipeline import RunConfig
from ptlens.results import files as F
from ptlens.weights.config import ScanConfig

app = typer.Typer(
    name="ptlens",
    help="What did post-training do to a language model? Weights, behaviour and a verdict for base → SFT → DPO → RLVR lineages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # --output_dir, --layer_pattern …: underscores spell the same option, without a second name in --help
    context_settings={"token_normalize_func": lambda name: name.replace("_", "-")},  # click strips the "--" first
)
def _version(value: bool) -> None:
    if value:
        from ptlens.version import __version__

        typer.echo(f"ptlens {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """ptlens: post-training lens."""
    threads.setup()  # before torch/numba load: no spin-waiting, threads sized to the free cores


@app.command()
@user_errors
def presets() -> None:
    """List the named lineages (--preset NAME) with each stage's model and training facts."""
    out = Console()
    for r in preset_renderables(out.width):
        out.print(r)


def preset_renderables(width: int = 80) -> list:
    """One table per preset: stage and model never wrap; training facts fold; shared sources go below."""
    from rich.markup import escape
    from rich.text import Text

    from ptlens.resolve.presets import PRESETS

    items: list = []
    for p in PRESETS.values():
        t = Table(title=f"[bold]{escape(p.name)}[/] — {escape(p.description)}", title_justify="left", expand=False)
        t.add_column("stage", no_wrap=True)
        t.add_column("model", no_wrap=True, min_width=max(len(s.spec) for s in p.stages))
        t.add_column("training (algorithm, data, learning rate)", overflow="fold")
        sources = list(dict.fromkeys(s.facts.source for s in p.stages if s.facts.source))
        for s in p.stages:
            f = s.facts
            data = ", ".join(
                f"{v:,} {k}" for k, v in (("examples", f.examples), ("pairs", f.pairs), ("prompts", f.prompts)) if v)
            if f.epochs:
                data += f" × {f.epochs:g} epoch{'s' if f.epochs != 1 else ''}"
            facts = [f.algorithm or "", data, f"lr {f.learning_rate:g}" if f.learning_rate else ""]
            if f.source and len(sources) > 1:
                facts.append(f"[{sources.index(f.source) + 1}]")
            t.add_row(escape(s.label), escape(s.spec), escape("; ".join(x for x in facts if x)))
        items.append(t)
        for i, src in enumerate(sources):
            items.append(Text(f"  source{f' [{i + 1}]' if len(sources) > 1 else ''}: {src}", style="dim"))
    items.append(Text.from_markup("[bold]tiny[/] — the embedded default lineage (ptlens run with no arguments): "
                                  "base → sft → dpo → rlvr trained by ptlens lab"))
    items.append(Text.from_markup("[bold]tiny-trajectory[/] — the same run with its intermediate SFT, DPO and GRPO "
                                  "checkpoints (convergence curves)"))
    return items


@app.command(context_settings={"allow_extra_args": False})
@user_errors
def weights(
    extra: Optional[list[str]] = ExtraArg,
    preset: Optional[str] = PresetOpt,
    models: Optional[list[str]] = ModelsOpt,
    output_dir: Path = option(RunConfig, "output_dir"),
    layer_pattern: Optional[str] = option(ScanConfig, "layer_pattern"),
    spectral: str = option(ScanConfig, "spectral"),
    k: int = option(ScanConfig, "k"),
    tolerance: float = option(ScanConfig, "tolerance"),
    device: str = option(ScanConfig, "device"),
    workers: Optional[int] = option(ScanConfig, "workers"),
    allow_pickle: bool = option(ScanConfig, "allow_pickle"),
    allow_missing: bool = option(RunConfig, "allow_missing"),
    figures: bool = option(RunConfig, "figures"),
    executor: str = option(RunConfig, "executor"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start an interrupted scan over instead of resuming it "
                                   "(needed when its checkpoint files changed since)."),
) -> None:
    """Stream every tensor of every checkpoint once; write per-tensor metrics, aggregates, figures and a report.

    An interrupted scan resumes: rerunning the same command scans only the tensors not yet finished."""
    from ptlens.pipeline import preflight

    cfg = ScanConfig(spectral=spectral, k=k, tolerance=tolerance, layer_pattern=layer_pattern, device=device,
                     workers=workers, allow_pickle=allow_pickle)
    preflight(cfg, output_dir=output_dir)
    from ptlens.pipeline import start_weight_figure_pool

    pool = start_weight_figure_pool() if figures else None  # before torch or numba is imported
    try:
        from ptlens.pipeline import run_weights
        from ptlens.weights.executors import get_executor  # imports torch: not at CLI start-up

        ex = get_executor(executor)
        lineage = lineage_from_options(preset, models, extra, allow_pickle)
        w = run_weights(lineage, cfg, output_dir, figures=figures, allow_missing=allow_missing, overwrite=overwrite,
                        reporter=ConsoleReporter(), executor=ex, figure_pool=pool)
        if pool is not None:
            pool.shutdown()  # the workers exit while the summary prints
        print_weight_summary(w.summary, output_dir, w.missing)
        print_figures_not_drawn(output_dir, (F.WEIGHTS_DIR,))
    finally:
        if pool is not None:
            pool.close()


@app.command()
@user_errors
def run(
    extra: Optional[list[str]] = ExtraArg,
    preset: Optional[str] = PresetOpt,
    models: Optional[list[str]] = ModelsOpt,
    output_dir: Path = option(RunConfig, "output_dir"),
    device: str = option(ScanConfig, "device"),
    spectral: str = option(ScanConfig, "spectral"),
    problems: str = option(BehaviorConfig, "problems"),
    limit: Optional[int] = option(BehaviorConfig, "limit"),
    n_samples: int = option(BehaviorConfig, "n_samples"),
    max_new_tokens: int = option(BehaviorConfig, "max_new_tokens"),
    engine: str = option(BehaviorConfig, "engine"),
    overwrite: bool = option(RunConfig, "overwrite"),
    allow_pickle: bool = option(ScanConfig, "allow_pickle"),
    allow_missing: bool = option(RunConfig, "allow_missing"),
    executor: str = option(RunConfig, "executor"),
) -> None:
    """The main job: weights, behaviour and report for a lineage (default: the embedded tiny lineage).

    Each step stores its results; rerunning the same command reuses finished steps and resumes an interrupted behaviour run.
    """
    from ptlens.pipeline import run as run_pipeline

    cfg = RunConfig.from_options(output_dir, device=device, spectral=spectral, problems=problems, limit=limit,
                                 n_samples=n_samples, max_new_tokens=max_new_tokens, engine=engine, overwrite=overwrite,
                                 allow_pickle=allow_pickle, allow_missing=allow_missing, executor=executor)
    # the pipeline's preflight checks every option and the folder before it resolves (and maybe downloads) the lineage
    run_pipeline(model_items(models, extra), preset=preset, config=cfg, reporter=ConsoleReporter())
    from ptlens.cli.kit import print_total_time

    print_figures_not_drawn(output_dir)
    print_total_time("ptlens run")


from ptlens.cli.behavior import behavior, quick  # noqa: E402
from ptlens.cli.report import report, write_report  # noqa: E402
from ptlens.cli.lab import lab  # noqa: E402
from ptlens.cli.mechanism import mechanism  # noqa: E402

app.command("behavior")(behavior)
app.command("quick")(quick)
app.command("report")(report)
app.command("lab")(lab)
app.command("mechanism")(mechanism)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
