"""``ptlens report DIR`` and the report step of ``ptlens run``: build the report, print the verdicts.

``cli.py`` registers the command (``app.command("report")(report)``); ``ptlens run`` calls
:func:`write_report` after its weight and behaviour steps.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ptlens.cli.kit import user_errors

STYLE = {"clear difference": "bold blue", "unexpected": "bold yellow", "minimal": "", "not measured": "dim"}


def print_verdicts(result: dict, console: Console | None = None) -> None:
    """The verdict table and the paths of the written files."""
    console = console or Console()
    t = Table(title="Verdicts (criteria in report.html → Methods)", title_justify="left")
    for col in ("question", "verdict", "compared", "checks"):
        t.add_column(col)
    for v in result["verdicts"]:
        t.add_row(v.question, f"[{STYLE.get(v.label, '')}]{v.label}[/]" if STYLE.get(v.label) else v.label,
                  escape(v.comparison or "–"), escape(v.summary))
    console.print(t)
    if result.get("decision") is not None:
        print_decision(result["decision"], console)
    Console(stderr=True).print(f"report: {result['html']}\n        {result['markdown']}", markup=False, highlight=False)


def print_decision(d, console: Console) -> None:
    """The overall decision (ptlens.report.decision) under the verdicts: branch, why, how sure, next step."""
    from ptlens.report.decision import SPEND, INVESTIGATE, decision_rows

    style = {SPEND: "bold blue", INVESTIGATE: "bold yellow"}.get(d.branch, "bold")
    console.print(f"[{style}]Decision: {escape(d.branch)}[/] — {escape(d.headline)}")
    for name, text in decision_rows(d):
        if isinstance(text, list):
            console.print(f"  [bold]{name}[/]:")
            for t in text:
                console.print(f"    - {escape(t)}")
        else:
            console.print(f"  [bold]{name}[/]: {escape(text)}")


def write_report(output_dir: Path, console: Console | None = None) -> dict:
    """Build the report from what ``output_dir`` holds and print the verdicts (the last step of ``ptlens run``)."""
    from ptlens.report.build import build_report

    result = build_report(output_dir)
    print_verdicts(result, console)
    return result


@user_errors
def report(
    output_dir: Path = typer.Argument(..., metavar="DIR", help="The --output-dir of ptlens run / weights / behavior."),
) -> None:
    """Rebuild report.html and report.md from the stored results in DIR, without recomputing anything."""
    from ptlens.pipeline import preflight

    preflight(output_dir=output_dir, what="DIR")
    write_report(output_dir)
