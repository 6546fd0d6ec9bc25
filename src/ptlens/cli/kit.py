"""What every command shares: the stderr console, the user-error wrapper, options built from config fields,
tables that stay readable at 80 columns, and progress lines for non-terminal output."""

from __future__ import annotations

import contextvars
import functools
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import typer
from rich.console import Console
from rich.markup import escape

from ptlens.errors import PtlensError
from ptlens.progress import duration_text

console = Console(stderr=True)


_FLAGS_GIVEN: contextvars.ContextVar[list[str]] = contextvars.ContextVar("ptlens_flags_given", default=[])
"""The flags (off by default) given to the running command: a stray ``true`` after one is blamed on it."""


_STARTED: contextvars.ContextVar[float] = contextvars.ContextVar("ptlens_started", default=time.monotonic())


def _flags_off_by_default(fn: Callable) -> list[str]:
    import inspect

    out = []
    for name, p in inspect.signature(fn).parameters.items():
        default = getattr(p.default, "default", p.default)  # typer.Option(False, …) holds its default
        if p.annotation in (bool, "bool") and default is False:
            out.append(name)
    return out


def user_errors(fn: Callable) -> Callable:
    """One clear line and exit code 2 for bad input; tracebacks are for ptlens's own bugs."""

    off_by_default = _flags_off_by_default(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _STARTED.set(time.monotonic())
        _FLAGS_GIVEN.set([f"--{k.replace('_', '-')}" for k in off_by_default if kwargs.get(k) is True])
        try:
            return fn(*args, **kwargs)
        except PtlensError as e:
            console.print(f"[bold red]ptlens: error:[/] {escape(str(e))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: finished results are saved; rerun the same command to resume[/]")
            raise typer.Exit(130) from None

    return wrapper


def _flags_without_values() -> None:
    """Help shows no type beside a flag (``--overwrite``, not ``--overwrite <bool>``): a flag takes no value.

    Typer prints the annotation's type for every option; for a flag that invites ``--overwrite true``.
    """
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_ptlens", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag and not self.count else shown(self, ctx)

    display_type_rich._ptlens = True
    TyperOption.display_type_rich = display_type_rich


_flags_without_values()

# a new lineage item starts where whitespace is followed by "label=": a space inside a path stays in it
_ITEM_START = re.compile(r"\s+(?=[A-Za-z0-9][\w.\-]*=)")
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def model_items(models: Optional[list[str]], extra: Optional[list[str]]) -> list[str]:
    """``--models a=X b=Y``, ``--models a=X --models b=Y`` and bare ``a=X b=Y`` all give [a=X, b=Y].

    Several items may share one argument (``--models "a=X b=Y"``), split where a ``label=`` follows a space,
    so a quoted path with spaces (``--models "sft=/x/dir with spaces/sft"``) stays one item. A bare word
    that is no item is named here, before any work; a ``true``/``false`` is blamed on the flag before it.
    """
    items = [m for group in (models or [], extra or []) for item in group for m in _ITEM_START.split(item.strip())
             if m]
    for m in items:
        if "=" not in m:
            raise PtlensError(_not_an_item(m))
    return items


def _not_an_item(word: str) -> str:
    if word.lower() in _BOOL_WORDS:
        flags = _FLAGS_GIVEN.get()
        if flags:
            return (f"{' or '.join(flags)} takes no value, got {word!r} after it: write the flag alone "
                    f"(leave it out for false)")
        return f"unexpected argument {word!r}: flags take no value (write the flag alone)"
    return (f"--models expects label=SPEC items, got {word!r} (e.g. sft=allenai/Llama-3.1-Tulu-3-8B-SFT; quote a "
            f"path with spaces: \"sft=/x/dir with spaces/sft\")")


def lineage_from_options(preset: Optional[str], models: Optional[list[str]], extra: Optional[list[str]],
                         allow_pickle: bool):
    """--preset or --models (with the items that follow it), resolved to local checkpoints."""
    from ptlens.resolve import resolve_lineage

    items = model_items(models, extra)
    return resolve_lineage(models=items or None, preset=preset, allow_pickle=allow_pickle)


# ---------------------------------------------------------------- checks before any work (library: ptlens.pipeline)

from ptlens.pipeline import check_lineage_tensors, check_output_dir  # noqa: E402,F401  (re-exported for the commands)


# ---------------------------------------------------------------- options: from config fields, else one definition each


def option(cls, name: str, *decls: str, **typer_kw) -> Any:
    """The typer option of config field ``cls.name``: the field's default, flag and help text (one source, see
    :mod:`ptlens.config_fields`); ``decls`` add names (``-o``), ``typer_kw`` typer's other keywords."""
    from ptlens.config_fields import setting_of

    s = setting_of(cls, name)
    info = typer.Option(typer_kw.pop("default", s.default), s.flag, *decls, help=s.help, **typer_kw)
    info.ptlens_field = (cls, name)  # what tests compare the option with
    return info


PresetOpt = typer.Option(None, "--preset", help="A named lineage (see `ptlens presets`); default: the embedded tiny lineage.")
ModelsOpt = typer.Option(None, "--models", help="label=SPEC items in order (SPEC: folder, hub id or id@revision); "
                         "space-separated after one --models, or repeated.")
ExtraArg = typer.Argument(None, metavar="[LABEL=SPEC]...", help="More lineage items (same as --models).")


# ---------------------------------------------------------------- tables at any width


def cell_width(text: str) -> int:
    """Display width of the widest line of a cell (markup removed)."""
    from rich.text import Text

    return max((Text.from_markup(line).cell_len for line in str(text).split("\n")), default=0)


def header_width(header: str) -> int:
    """Narrowest a header can be: its longest word (rich wraps headers at spaces)."""
    return max((cell_width(w) for w in header.split()), default=0)


def keyed_tables(title: str, key: str, keys: Sequence[str], columns: Sequence[tuple[str, str]],
                 cells: Sequence[Sequence[str]], width: int, caption: Optional[str] = None) -> list:
    """Rich tables of ``keys`` × ``columns`` that fit in ``width`` columns without cutting anything.

    The key column never wraps; value columns are packed left to right into as many tables as
    needed, each repeating the key column (``columns`` are (header, justify) pairs; ``cells[i][j]``
    is row i, column j, possibly two lines: value and interval).
    """
    from rich.table import Table

    key_w = max([cell_width(k) for k in keys] + [header_width(key)]) + 3
    col_w = [max([cell_width(r[j]) for r in cells] + [header_width(h)]) + 3 for j, (h, _) in enumerate(columns)]
    groups: list[list[int]] = [[]]
    used = 1 + key_w
    for j, w in enumerate(col_w):
        if groups[-1] and used + w > width:
            groups.append([])
            used = 1 + key_w
        groups[-1].append(j)
        used += w
    tables = []
    for gi, group in enumerate(groups):
        part = f" ({gi + 1}/{len(groups)})" if len(groups) > 1 else ""
        t = Table(title=title + part, title_justify="left", caption=caption if gi == len(groups) - 1 else None,
                  caption_justify="left")
        t.add_column(key, no_wrap=True, width=key_w - 3)
        for j in group:
            h, just = columns[j]
            t.add_column(h, justify=just, overflow="fold", width=col_w[j] - 3)
        for k, row in zip(keys, cells):
            t.add_row(k, *(row[j] for j in group))
        tables.append(t)
    return tables


# ---------------------------------------------------------------- progress without a terminal


def print_total_time(command: str) -> None:
    """The command's wall time (from when its options were parsed), last on stderr."""
    elapsed = time.monotonic() - _STARTED.get()
    if elapsed < 60:
        took = f"{elapsed:.1f} s"
    elif elapsed < 600:  # a short run's minutes alone hide up to half of it (86 s read "1 min")
        took = f"{int(elapsed // 60)} min {elapsed % 60:.0f} s"
    else:
        took = duration_text(elapsed)
    console.print(f"{command}: done in {took}", markup=False, highlight=False)


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
