"""The ``ptlens`` command: a thin typer layer; every command builds a config and calls the library."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from ptlens.errors import PtlensError

app = typer.Typer(
    name="ptlens",
    help="What did post-training do to a language model? Weights, behaviour and a verdict for base → SFT → DPO → RLVR lineages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from ptlens import __version__

        typer.echo(f"ptlens {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """ptlens: post-training lens."""


def user_errors(fn: Callable) -> Callable:
    """One clear line and exit code 2 for bad input; tracebacks are for ptlens's own bugs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PtlensError as e:
            console.print(f"[bold red]ptlens: error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: finished results are saved; rerun the same command to resume[/]")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
def presets() -> None:
    """List the named lineages (--preset NAME) with each stage's model and training facts."""
    from ptlens.resolve.presets import PRESETS

    out = Console()
    for p in PRESETS.values():
        t = Table(title=f"[bold]{p.name}[/] — {p.description}", title_justify="left", expand=False)
        for col in ("stage", "model", "algorithm", "data", "lr", "source"):
            t.add_column(col)
        for s in p.stages:
            f = s.facts
            data = ", ".join(
                f"{v:,} {k}" for k, v in (("examples", f.examples), ("pairs", f.pairs), ("prompts", f.prompts)) if v
            )
            if f.epochs:
                data += f" × {f.epochs:g} epochs"
            t.add_row(s.label, s.spec, f.algorithm or "", data, f"{f.learning_rate:g}" if f.learning_rate else "", f.source or "")
        out.print(t)
    out.print("[bold]tiny[/] — the embedded default lineage (ptlens run with no arguments)")


PresetOpt = typer.Option(None, "--preset", help="A named lineage (see `ptlens presets`); default: the embedded tiny lineage.")
ModelsOpt = typer.Option(None, "--models", help="label=SPEC items in order (SPEC: folder, hub id or id@revision); "
                         "space-separated after one --models, or repeated.")
OutOpt = typer.Option(Path("analysis_results"), "--output-dir", "--output_dir", help="Where results go.")
DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda or auto.")
PickleOpt = typer.Option(False, "--allow-pickle", help="Accept pickle *.bin checkpoints (loaded with weights_only=True).")


def lineage_from_options(preset: Optional[str], models: Optional[list[str]], extra: Optional[list[str]],
                         allow_pickle: bool):
    """--preset or --models (with the items that follow it), resolved to local checkpoints."""
    from ptlens.resolve import resolve_lineage

    items = list(models or []) + list(extra or [])
    if extra and not models:
        raise PtlensError(f"unexpected argument(s) {' '.join(extra)}: name checkpoints with --models label=SPEC …")
    return resolve_lineage(models=items or None, preset=preset, allow_pickle=allow_pickle)


def byte_progress(description: str):
    """A rich progress bar in bytes with rate and ETA; returns (progress, callback)."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[item]}", style="dim"), console=console,
                    transient=False)
    task = prog.add_task(description, total=None, item="")

    def update(done: int, total: int, item: str) -> None:
        prog.update(task, completed=done, total=total, item=item[-48:])

    return prog, update


@app.command(context_settings={"allow_extra_args": False})
@user_errors
def weights(
    extra: Optional[list[str]] = typer.Argument(None, hidden=True),
    preset: Optional[str] = PresetOpt,
    models: Optional[list[str]] = ModelsOpt,
    output_dir: Path = OutOpt,
    layer_pattern: Optional[str] = typer.Option(None, "--layer-pattern", "--layer_pattern",
                                                help="Only tensors whose name matches this regex (e.g. 'layers\\.0\\.')."),
    spectral: str = typer.Option("topk", "--spectral", help="off, topk (randomized SVD) or full (every singular value)."),
    k: int = typer.Option(16, "--k", help="Rank k of the spectral metrics."),
    tolerance: float = typer.Option(1e-5, "--tolerance", help="|Δ| threshold of changed_tol."),
    device: str = DeviceOpt,
    workers: Optional[int] = typer.Option(None, "--workers", help="CPU threads (default: all cores)."),
    allow_pickle: bool = PickleOpt,
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the figures."),
) -> None:
    """Stream every tensor of every checkpoint once; write per-tensor metrics, aggregates, figures and a report."""
    from ptlens.weights import ScanConfig, scan_lineage, write_outputs

    cfg = ScanConfig(spectral=spectral, k=k, tolerance=tolerance, layer_pattern=layer_pattern, device=device,
                     workers=workers, allow_pickle=allow_pickle)
    cfg.validate()
    lineage = lineage_from_options(preset, models, extra, allow_pickle)
    summary = run_weights(lineage, cfg, output_dir, figures)
    print_weight_summary(summary, output_dir)


def run_weights(lineage, cfg, output_dir: Path, figures: bool = True) -> dict:
    from ptlens.weights import scan_lineage, write_outputs

    prog, update = byte_progress("weights")
    with prog:
        result = scan_lineage(lineage, cfg, progress=update)
    console.print("[dim]writing tables, figures and weight_analysis_report.md …[/]")
    return write_outputs(result, output_dir, figures=figures)


def print_weight_summary(summary: dict, output_dir: Path) -> None:
    out = Console()
    k = summary["settings"]["k"]
    t = Table(title="Weight changes (parameter-weighted, whole model)", title_justify="left")
    for col in ("transition", "rel. change", "changed (exact)", "changed (>tol)", "stable rank", f"top-{k} energy",
                "principal overlap"):
        t.add_column(col, justify="right" if col != "transition" else "left")
    from ptlens.weights.report_md import _f

    for r in summary["aggregates"]["model"]:
        t.add_row(r["transition"], _f(r["rel_change"]), _f(r["changed_exact"], pct=True), _f(r["changed_tol"], pct=True),
                  _f(r.get("stable_rank_wmean")), _f(r.get(f"top{k}_energy_wmean")), _f(r.get("principal_overlap_wmean")))
    out.print(t)
    gbps = summary.get("throughput_gb_per_s")
    out.print(f"{summary['bytes_read'] / 1e9:.3g} GB in {summary['seconds']:.1f} s"
              + (f" ({gbps:.2f} GB/s)" if gbps else "")
              + f" → [bold]{output_dir}/weight_analysis_report.md[/], {output_dir}/weights/")


@app.command()
@user_errors
def run(
    extra: Optional[list[str]] = typer.Argument(None, hidden=True),
    preset: Optional[str] = PresetOpt,
    models: Optional[list[str]] = ModelsOpt,
    output_dir: Path = OutOpt,
    device: str = DeviceOpt,
    spectral: str = typer.Option("topk", "--spectral", help="off, topk or full."),
    allow_pickle: bool = PickleOpt,
) -> None:
    """The main job: analyse a lineage (default: the embedded tiny lineage) end to end."""
    from ptlens.weights import ScanConfig

    cfg = ScanConfig(spectral=spectral, device=device, allow_pickle=allow_pickle)
    cfg.validate()
    lineage = lineage_from_options(preset, models, extra, allow_pickle)
    note = next((c.facts.notes for c in lineage.checkpoints if c.facts.notes and "synthetic" in c.facts.notes), None)
    if note:
        console.print(f"[yellow]lineage: {note}[/]")
    summary = run_weights(lineage, cfg, output_dir)
    print_weight_summary(summary, output_dir)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
