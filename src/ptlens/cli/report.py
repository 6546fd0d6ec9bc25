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

from ptlens.cli.kit import check_output_dir, user_errors

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
    Console(stderr=True).print(f"report: {result['html']}\n        {result['markdown']}", markup=False, highlight=False)


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
    check_output_dir(output_dir, "DIR")
    write_report(output_dir)
