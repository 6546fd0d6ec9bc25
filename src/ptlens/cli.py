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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
