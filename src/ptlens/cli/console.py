"""What the console shows as the pipeline runs: byte progress of the weight scan, the weight summary, the mechanism
summary, and ``ConsoleReporter``, the pipeline's reporter for the terminal (tables on stdout, notes on stderr).

Apart from the commands, which use it, so that no command module imports another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console

from ptlens.cli.kit import console, keyed_tables
from ptlens.pipeline import Reporter
from ptlens.results import files as F


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


def print_mechanism_summary(summary: dict, output_dir: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ptlens.report.mechanism import mechanism_record

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
        print_mechanism_summary(result.summary, output_dir)

    def report_done(self, result: dict) -> None:
        from ptlens.cli.report import print_verdicts

        print_verdicts(result)
