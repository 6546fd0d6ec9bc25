"""The ``ptlens`` command: a thin typer layer; every command builds a config and calls the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ptlens import threads
from ptlens.behavior.engines import engine_names
from ptlens.cli.kit import (DeviceOpt, ExtraArg, MaxNewTokensOpt, MissingOpt, ModelsOpt, OutOpt, OverwriteOpt, PickleOpt,
                           PresetOpt, ProblemsOpt, check_output_dir, console, keyed_tables, lineage_from_options,
                           model_items, user_errors)
from ptlens.errors import PtlensError
from ptlens.pipeline import Reporter
from ptlens.results import files as F

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


def byte_progress(description: str):
    """Progress in bytes: a rich bar with rate and ETA on a terminal, plain lines otherwise; returns (progress, callback).

    The bar is transient: it never leaves an empty line above an error, and the summary that follows says the same.
    """
    if not console.is_terminal:
        from ptlens.progress import LineProgress

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
    extra: Optional[list[str]] = ExtraArg,
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Start an interrupted scan over instead of resuming it "
                                   "(needed when its checkpoint files changed since)."),
) -> None:
    """Stream every tensor of every checkpoint once; write per-tensor metrics, aggregates, figures and a report.

    An interrupted scan resumes: rerunning the same command scans only the tensors not yet finished."""
    if workers is not None and workers < 1:
        raise PtlensError(f"--workers must be at least 1, got {workers}")
    from ptlens.pipeline import start_weight_figure_pool

    pool = start_weight_figure_pool() if figures else None  # before torch or numba is imported
    try:
        from ptlens.pipeline import run_weights
        from ptlens.weights import ScanConfig

        cfg = ScanConfig(spectral=spectral, k=k, tolerance=tolerance, layer_pattern=layer_pattern, device=device,
                         workers=workers, allow_pickle=allow_pickle)
        cfg.validate()
        from ptlens.weights.executors import get_executor  # imports torch: not at CLI start-up

        ex = get_executor(executor)
        check_output_dir(output_dir)
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


def print_figures_not_drawn(output_dir: Path, folders: Optional[tuple[str, ...]] = None) -> int:
    """Every figure missing under ``output_dir`` with why (figures_not_drawn.json beside them); returns how many
    failed. A failure is a warning; a figure with nothing to draw in this run (no trajectory …) one dim line."""
    from rich.markup import escape

    from ptlens.figpool import NOT_DRAWN, figures_not_drawn

    notes = {k: v for k, v in figures_not_drawn(output_dir).items() if folders is None or k.split("/")[0] in folders}
    failed = {k: v for k, v in notes.items() if not v.startswith("nothing to draw")}
    if failed:
        console.print(f"[yellow]{len(failed)} figure(s) not drawn (in {escape(str(output_dir))}/*/{NOT_DRAWN}):[/]")
        for k, why in failed.items():
            console.print(f"[yellow]  {escape(k)}: {escape(why)}[/]", soft_wrap=True)
    empty = {k: v for k, v in notes.items() if k not in failed}
    if empty:
        console.print("[dim]no data for: " + "; ".join(f"{escape(k)} ({escape(v.split(': ', 1)[-1])})"
                                                    for k, v in empty.items()) + "[/]", soft_wrap=True)
    return len(failed)


def print_weight_summary(summary: dict, output_dir: Path, missing: Optional[dict] = None) -> None:
    out = Console()
    for r in weight_summary_renderables(summary, output_dir, out.width, missing):
        out.print(r)


def weight_summary_renderables(summary: dict, output_dir: Path, width: int = 80, missing: Optional[dict] = None) -> list:
    """The console summary of a weight scan: a table per transition that fits ``width``, then one line of facts."""
    from rich.markup import escape
    from rich.text import Text

    from ptlens.results import registry as REG
    from ptlens.weights.report_md import metric_cell

    k = summary["settings"]["k"]
    pattern = summary["settings"].get("layer_pattern")
    scope = f"tensors matching {pattern}" if pattern else "whole model"
    shown = REG.metrics(table=REG.CONSOLE)  # which metrics and how: the registry
    cols = [(m.header(k), "right") for m in shown]
    rows = summary["aggregates"]["model"]
    cells = [[metric_cell(r, m, k) for m in shown] for r in rows]
    items: list = keyed_tables(f"Weight changes (parameter-weighted, {escape(scope)})", "transition",
                               [escape(r["transition"]) for r in rows], cols, cells, width)
    skipped = missing if missing is not None else summary.get("missing_tensors") or {}
    if skipped:
        items.append(Text(f"skipped {len(skipped)} tensor(s) absent from some checkpoints (--allow-missing); "
                          f"listed in {F.WEIGHT_REPORT_MD}", style="yellow"))
    items.append(Text(scan_facts(summary) + f" → {output_dir}/{F.WEIGHT_REPORT_MD}, {output_dir}/{F.WEIGHTS_DIR}/"))
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


class ConsoleReporter(Reporter):
    """The pipeline's progress and summaries on the terminal: tables on stdout, notes and progress on stderr."""

    behavior_progress = True

    def message(self, text: str) -> None:
        from rich.markup import escape

        console.print(f"[dim]{escape(text)}[/]")

    def warning(self, text: str) -> None:
        from rich.markup import escape

        console.print(f"[yellow]{escape(text)}[/]")

    def weights_progress(self, description: str):
        return byte_progress(description)

    def weights_done(self, summary: dict, output_dir: Path, missing: dict) -> None:
        print_weight_summary(summary, output_dir, missing)

    def behavior_done(self, result) -> None:
        from ptlens.cli.behavior import print_paths, print_summary

        print_summary(Console(), result.results)
        print_paths(result)

    def mechanism_status(self):
        from contextlib import contextmanager

        @contextmanager
        def status():
            with console.status("mechanism …") as st:
                yield lambda m: st.update(m)

        return status()

    def mechanism_done(self, result, output_dir: Path) -> None:
        from ptlens.cli.mechanism import print_summary

        print_summary(result.summary, output_dir)

    def report_done(self, result: dict) -> None:
        from ptlens.cli.report import print_verdicts

        print_verdicts(result)


@app.command()
@user_errors
def run(
    extra: Optional[list[str]] = ExtraArg,
    preset: Optional[str] = PresetOpt,
    models: Optional[list[str]] = ModelsOpt,
    output_dir: Path = OutOpt,
    device: str = DeviceOpt,
    spectral: str = typer.Option("topk", "--spectral", help="off, topk (approximate, ~1%) or full (exact; slow on CPU)."),
    problems: str = ProblemsOpt,
    limit: Optional[int] = typer.Option(None, "--limit", help="Number of problems (builtin default: 60)."),
    n_samples: int = typer.Option(16, "--n-samples", help="Samples per problem and model."),
    max_new_tokens: int = MaxNewTokensOpt,
    engine: str = typer.Option("auto", "--engine", help=", ".join(engine_names()) + "."),
    overwrite: bool = OverwriteOpt,
    allow_pickle: bool = PickleOpt,
    allow_missing: bool = MissingOpt,
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
) -> None:
    """The main job: weights, behaviour and report for a lineage (default: the embedded tiny lineage).

    Each step stores its results; rerunning the same command reuses finished steps and resumes an interrupted behaviour run.
    """
    from ptlens.pipeline import RunConfig
    from ptlens.pipeline import run as run_pipeline

    cfg = RunConfig.from_options(output_dir, device=device, spectral=spectral, problems=problems, limit=limit,
                                 n_samples=n_samples, max_new_tokens=max_new_tokens, engine=engine, overwrite=overwrite,
                                 allow_pickle=allow_pickle, allow_missing=allow_missing, executor=executor)
    # the pipeline checks every option and the folder before it resolves (and maybe downloads) the lineage
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
