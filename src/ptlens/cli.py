"""The ``ptlens`` command: a thin typer layer; every command builds a config and calls the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ptlens import threads
from ptlens.behavior.engines import engine_names
from ptlens.clikit import (check_lineage_tensors, check_output_dir, console, keyed_tables, lineage_from_options,
                           user_errors)
from ptlens.errors import PtlensError

EXECUTOR_HELP = ("Where the weight scan's per-tensor tasks run: local (this process) or ray (Ray tasks on the "
                 "cluster of RAY_ADDRESS, else a local one; needs pip install 'ptlens\\[ray]').")

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
        from ptlens import __version__

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


PresetOpt = typer.Option(None, "--preset", help="A named lineage (see `ptlens presets`); default: the embedded tiny lineage.")
ModelsOpt = typer.Option(None, "--models", help="label=SPEC items in order (SPEC: folder, hub id or id@revision); "
                         "space-separated after one --models, or repeated.")
OutOpt = typer.Option(Path("analysis_results"), "--output-dir", help="Where results go (--output_dir works too).")
DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda or auto.")
PickleOpt = typer.Option(False, "--allow-pickle", help="Accept pickle *.bin checkpoints (loaded with weights_only=True).")
MissingOpt = typer.Option(False, "--allow-missing", help="Compare only the tensors present when a checkpoint lacks some "
                          "(default: an error, as it usually means different architectures).")


def byte_progress(description: str):
    """Progress in bytes: a rich bar with rate and ETA on a terminal, plain lines otherwise; returns (progress, callback).

    The bar is transient: it never leaves an empty line above an error, and the summary that follows says the same.
    """
    if not console.is_terminal:
        from ptlens.clikit import LineProgress

        lines = LineProgress(console)
        task = None

        def update_lines(done: int, total: int, item: str) -> None:
            nonlocal task
            if task is None:
                task = lines.add_task(description, total=total / 1e6, unit="MB")
            lines.update(task, completed=done / 1e6, total=total / 1e6)

        return lines, update_lines
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[item]}", style="dim"), console=console,
                    transient=True)
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
    layer_pattern: Optional[str] = typer.Option(None, "--layer-pattern",
                                                help="Only tensors whose name matches this regex (e.g. 'layers\\.0\\.')."),
    spectral: str = typer.Option("topk", "--spectral", help="off; topk (randomized block-Krylov SVD, ~1% with a per-value error estimate); "
                                  "or full (exact SVDs of W_A, W_B and ΔW, every spectral column exact; slow on CPU: "
                                  "minutes per large matrix, hours for an 8B model)."),
    k: int = typer.Option(16, "--k", help="Rank k of the spectral metrics."),
    tolerance: float = typer.Option(1e-5, "--tolerance", help="|Δ| threshold of changed_tol."),
    device: str = DeviceOpt,
    workers: Optional[int] = typer.Option(None, "--workers", help="CPU threads (default: the cores not busy with "
                                          "other work; PTLENS_THREADS sets it for every command)."),
    allow_pickle: bool = PickleOpt,
    allow_missing: bool = MissingOpt,
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the figures."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
) -> None:
    """Stream every tensor of every checkpoint once; write per-tensor metrics, aggregates, figures and a report."""
    from ptlens.weights import ScanConfig

    if workers is not None and workers < 1:
        raise PtlensError(f"--workers must be at least 1, got {workers}")
    cfg = ScanConfig(spectral=spectral, k=k, tolerance=tolerance, layer_pattern=layer_pattern, device=device,
                     workers=workers, allow_pickle=allow_pickle)
    cfg.validate()
    ex = _executor(executor)
    check_output_dir(output_dir)
    lineage = lineage_from_options(preset, models, extra, allow_pickle)
    missing = check_lineage_tensors(lineage, layer_pattern, allow_missing, allow_pickle)
    summary = run_weights(lineage, cfg, output_dir, figures, executor=ex)
    print_weight_summary(summary, output_dir, missing)


def _executor(name: str):
    from ptlens.weights.executors import get_executor  # the package imports torch: not at CLI start-up

    return get_executor(name)


def run_weights(lineage, cfg, output_dir: Path, figures: bool = True, executor="local") -> dict:
    from ptlens.weights import scan_lineage, write_outputs

    prog, update = byte_progress("weights")
    with prog:
        result = scan_lineage(lineage, cfg, progress=update, executor=executor)
    console.print("[dim]writing tables, figures and weight_analysis_report.md …[/]")
    return write_outputs(result, output_dir, figures=figures)


def print_weight_summary(summary: dict, output_dir: Path, missing: Optional[dict] = None) -> None:
    out = Console()
    for r in weight_summary_renderables(summary, output_dir, out.width, missing):
        out.print(r)


def weight_summary_renderables(summary: dict, output_dir: Path, width: int = 80, missing: Optional[dict] = None) -> list:
    """The console summary of a weight scan: a table per transition that fits ``width``, then one line of facts."""
    from rich.markup import escape
    from rich.text import Text

    from ptlens.weights.report_md import _f

    k = summary["settings"]["k"]
    pattern = summary["settings"].get("layer_pattern")
    scope = f"tensors matching {pattern}" if pattern else "whole model"
    cols = [("rel. change", "right"), ("changed (exact)", "right"), ("changed (>tol)", "right"),
            ("stable rank", "right"), (f"top-{k} energy", "right"), ("principal overlap", "right")]
    rows = summary["aggregates"]["model"]
    cells = [[_f(r["rel_change"]), _f(r["changed_exact"], pct=True), _f(r["changed_tol"], pct=True),
              _f(r.get("stable_rank_wmean")), _f(r.get(f"top{k}_energy_wmean")), _f(r.get("principal_overlap_wmean"))]
             for r in rows]
    items: list = keyed_tables(f"Weight changes (parameter-weighted, {escape(scope)})", "transition",
                               [escape(r["transition"]) for r in rows], cols, cells, width)
    skipped = missing if missing is not None else summary.get("missing_tensors") or {}
    if skipped:
        items.append(Text(f"skipped {len(skipped)} tensor(s) absent from some checkpoints (--allow-missing); "
                          "listed in weight_analysis_report.md", style="yellow"))
    items.append(Text(scan_facts(summary) + f" → {output_dir}/weight_analysis_report.md, {output_dir}/weights/"))
    return items


def scan_facts(summary: dict) -> str:
    """Bytes and time of the scan; a rate only for inputs large enough (≥ 1 GB) for it to mean throughput.

    On a tiny lineage the time is mostly one-off costs (numba compilation on first use, imports,
    spectral set-up), and bytes ÷ time would read as a throughput it is not.
    """
    from rich.filesize import decimal

    nbytes, secs = summary["bytes_read"], summary["seconds"]
    gbps = summary.get("throughput_gb_per_s")
    if nbytes >= 1e9 and gbps:
        return f"{decimal(nbytes)} in {secs:.1f} s ({decimal(int(gbps * 1e9))}/s)"
    return f"{decimal(nbytes)} in {secs:.1f} s (at this size mostly one-off costs such as numba compilation)"


@app.command()
@user_errors
def run(
    extra: Optional[list[str]] = typer.Argument(None, hidden=True),
    preset: Optional[str] = PresetOpt,
    models: Optional[list[str]] = ModelsOpt,
    output_dir: Path = OutOpt,
    device: str = DeviceOpt,
    spectral: str = typer.Option("topk", "--spectral", help="off, topk (approximate, ~1%) or full (exact; slow on CPU)."),
    problems: str = typer.Option("builtin", "--problems", help="builtin, gsm8k, math500 or a .jsonl file."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Number of problems (builtin default: 60)."),
    n_samples: int = typer.Option(16, "--n-samples", help="Samples per problem and model."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    engine: str = typer.Option("auto", "--engine", help=", ".join(engine_names()) + "."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace stored results made with other settings."),
    allow_pickle: bool = PickleOpt,
    allow_missing: bool = MissingOpt,
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
) -> None:
    """The main job: weights, behaviour and report for a lineage (default: the embedded tiny lineage).

    Each step stores its results; rerunning the same command reuses finished steps and resumes an interrupted behaviour run.
    """
    from ptlens.behavior.commands import validate_behavior
    from ptlens.behavior.run import BehaviorConfig
    from ptlens.weights import ScanConfig

    cfg = ScanConfig(spectral=spectral, device=device, allow_pickle=allow_pickle)
    cfg.validate()
    bcfg = BehaviorConfig(problems=problems, limit=limit, n_samples=n_samples, max_new_tokens=max_new_tokens,
                          engine=engine, device=device, overwrite=overwrite, allow_pickle=allow_pickle)
    validate_behavior(bcfg)
    ex = _executor(executor)
    check_output_dir(output_dir)
    lineage = lineage_from_options(preset, models, extra, allow_pickle)
    missing_tensors = check_lineage_tensors(lineage, None, allow_missing, allow_pickle)
    summary = stored_weights(lineage, cfg, output_dir) if not overwrite else None
    if summary is None:
        summary = run_weights(lineage, cfg, output_dir, executor=ex)
    else:
        console.print(f"[dim]weights: reusing {output_dir}/weights/summary.json (same lineage and settings)[/]")
    print_weight_summary(summary, output_dir, missing_tensors)
    missing = [c.name for c in lineage.checkpoints if not has_tokenizer(c.path)]
    if missing:
        console.print(f"[yellow]behaviour skipped: no tokenizer in {', '.join(missing)} (weights-only lineage)[/]")
    else:
        from ptlens.behavior.commands import _print_summary
        from ptlens.behavior.run import run_behavior

        result = run_behavior(lineage, bcfg, output_dir, progress=True)
        _print_summary(Console(), result.results)
        from ptlens.mechanism.commands import run_step
        from ptlens.mechanism.run import MechanismConfig

        run_step(lineage, MechanismConfig(problems=problems, limit=min(limit or 32, 32), max_new_tokens=max_new_tokens,
                                          device=device, allow_pickle=allow_pickle, overwrite=overwrite), output_dir)
    write_report(output_dir)


def has_tokenizer(path: Optional[Path]) -> bool:
    return path is not None and any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def stored_weights(lineage, cfg, output_dir: Path) -> Optional[dict]:
    """The stored weight summary, if it was made from this lineage with these settings."""
    import json
    from dataclasses import asdict

    from ptlens.io import read_json

    s = read_json(output_dir / "weights" / "summary.json")
    if s is None:
        return None
    same_lineage = [(c["path"], c.get("resolved_revision")) for c in s["lineage"]["checkpoints"]] == [
        (str(c.path), c.resolved_revision) for c in lineage.checkpoints]
    same_cfg = {k: v for k, v in s["settings"].items() if k in asdict(cfg)} == json.loads(json.dumps(asdict(cfg)))
    return s if same_lineage and same_cfg else None


from ptlens.behavior.commands import behavior, quick  # noqa: E402
from ptlens.report.commands import report, write_report  # noqa: E402
from ptlens.lab.commands import lab  # noqa: E402
from ptlens.mechanism.commands import mechanism  # noqa: E402

app.command("behavior")(behavior)
app.command("quick")(quick)
app.command("report")(report)
app.command("lab")(lab)
app.command("mechanism")(mechanism)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
