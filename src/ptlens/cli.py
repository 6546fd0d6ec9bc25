"""The ``ptlens`` command: a thin typer layer; every command builds a config and calls the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ptlens.behavior.engines import engine_names
from ptlens.clikit import console, lineage_from_options, user_errors
from ptlens.errors import PtlensError

app = typer.Typer(
    name="ptlens",
    help="What did post-training do to a language model? Weights, behaviour and a verdict for base → SFT → DPO → RLVR lineages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
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
    out.print("[bold]tiny[/] — the embedded default lineage (ptlens run with no arguments): base → sft → dpo → rlvr "
              "trained by ptlens lab")
    out.print("[bold]tiny-trajectory[/] — the same run with its intermediate SFT, DPO and GRPO checkpoints "
              "(convergence curves)")


PresetOpt = typer.Option(None, "--preset", help="A named lineage (see `ptlens presets`); default: the embedded tiny lineage.")
ModelsOpt = typer.Option(None, "--models", help="label=SPEC items in order (SPEC: folder, hub id or id@revision); "
                         "space-separated after one --models, or repeated.")
OutOpt = typer.Option(Path("analysis_results"), "--output-dir", "--output_dir", help="Where results go.")
DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda or auto.")
PickleOpt = typer.Option(False, "--allow-pickle", help="Accept pickle *.bin checkpoints (loaded with weights_only=True).")


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
    from rich.filesize import decimal

    rate = f" ({decimal(int(gbps * 1e9))}/s)" if gbps else ""
    out.print(f"{decimal(summary['bytes_read'])} in {summary['seconds']:.1f} s{rate}"
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
    problems: str = typer.Option("builtin", "--problems", help="builtin, gsm8k, math500 or a .jsonl file."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Number of problems (builtin default: 60)."),
    n_samples: int = typer.Option(16, "--n-samples", help="Samples per problem and model."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    engine: str = typer.Option("auto", "--engine", help=", ".join(engine_names()) + "."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace stored results made with other settings."),
    allow_pickle: bool = PickleOpt,
) -> None:
    """The main job: weights, behaviour and report for a lineage (default: the embedded tiny lineage).

    Each step stores its results; rerunning the same command reuses finished steps and resumes
    an interrupted behaviour run.
    """
    from ptlens.weights import ScanConfig

    cfg = ScanConfig(spectral=spectral, device=device, allow_pickle=allow_pickle)
    cfg.validate()
    lineage = lineage_from_options(preset, models, extra, allow_pickle)
    summary = stored_weights(lineage, cfg, output_dir) if not overwrite else None
    if summary is None:
        summary = run_weights(lineage, cfg, output_dir)
    else:
        console.print(f"[dim]weights: reusing {output_dir}/weights/summary.json (same lineage and settings)[/]")
    print_weight_summary(summary, output_dir)
    missing = [c.name for c in lineage.checkpoints if not has_tokenizer(c.path)]
    if missing:
        console.print(f"[yellow]behaviour skipped: no tokenizer in {', '.join(missing)} (weights-only lineage)[/]")
    else:
        from ptlens.behavior.commands import _print_summary
        from ptlens.behavior.run import BehaviorConfig, run_behavior

        bcfg = BehaviorConfig(problems=problems, limit=limit, n_samples=n_samples, max_new_tokens=max_new_tokens,
                              engine=engine, device=device, overwrite=overwrite, allow_pickle=allow_pickle)
        result = run_behavior(lineage, bcfg, output_dir, progress=True)
        _print_summary(Console(), result.results)
    write_report(output_dir)


def has_tokenizer(path: Optional[Path]) -> bool:
    return path is not None and any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def stored_weights(lineage, cfg, output_dir: Path) -> Optional[dict]:
    """The stored weight summary, if it was made from this lineage with these settings."""
    import json
    from dataclasses import asdict

    f = output_dir / "weights" / "summary.json"
    if not f.is_file():
        return None
    try:
        s = json.loads(f.read_text())
    except ValueError:
        return None
    same_lineage = [(c["path"], c.get("resolved_revision")) for c in s["lineage"]["checkpoints"]] == [
        (str(c.path), c.resolved_revision) for c in lineage.checkpoints]
    same_cfg = {k: v for k, v in s["settings"].items() if k in asdict(cfg)} == json.loads(json.dumps(asdict(cfg)))
    return s if same_lineage and same_cfg else None


from ptlens.behavior.commands import behavior, quick  # noqa: E402
from ptlens.report.commands import report, write_report  # noqa: E402
from ptlens.lab.commands import lab  # noqa: E402

app.command("behavior")(behavior)
app.command("quick")(quick)
app.command("report")(report)
app.command("lab")(lab)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
