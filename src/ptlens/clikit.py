"""What every command shares: the stderr console and the user-error wrapper."""

from __future__ import annotations

import functools
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ptlens.errors import PtlensError

console = Console(stderr=True)


def user_errors(fn: Callable) -> Callable:
    """One clear line and exit code 2 for bad input; tracebacks are for ptlens's own bugs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PtlensError as e:
            console.print(f"[bold red]ptlens: error:[/] {escape(str(e))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: finished results are saved; rerun the same command to resume[/]")
            raise typer.Exit(130) from None

    return wrapper


def model_items(models: Optional[list[str]], extra: Optional[list[str]]) -> list[str]:
    """``--models a=X b=Y``, ``--models a=X --models b=Y`` and bare ``a=X b=Y`` all give [a=X, b=Y]."""
    return [m for group in (models or [], extra or []) for item in group for m in item.split()]


def lineage_from_options(preset: Optional[str], models: Optional[list[str]], extra: Optional[list[str]],
                         allow_pickle: bool):
    """--preset or --models (with the items that follow it), resolved to local checkpoints."""
    from ptlens.resolve import resolve_lineage

    items = model_items(models, extra)
    return resolve_lineage(models=items or None, preset=preset, allow_pickle=allow_pickle)
