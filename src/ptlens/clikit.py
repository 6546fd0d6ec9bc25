"""What every command shares: the stderr console, the user-error wrapper, checks made before any work,
tables that stay readable at 80 columns, and progress lines for non-terminal output."""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

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


# ---------------------------------------------------------------- checks before any work


def check_output_dir(path: Path, what: str = "--output-dir") -> None:
    """Fail in one line, before any work, when ``path`` cannot hold results; creates nothing.

    Checked by creating (and removing) a probe directory in the nearest existing ancestor, since
    permission bits say nothing for root and nothing about read-only or virtual filesystems (/proc).
    ``what`` names the argument in the message.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PtlensError(f"{what} {path}: exists and is not a folder")
    probe_in = path.absolute()
    while not probe_in.exists():
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise PtlensError(f"{what} {path}: cannot create it, {probe_in} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ptlens-probe-", dir=probe_in))
    except OSError as e:
        raise PtlensError(f"{what} {path}: not writable ({e.strerror or e} in {probe_in})") from None


def check_lineage_tensors(lineage, layer_pattern: Optional[str], allow_missing: bool,
                          allow_pickle: bool = False) -> dict[str, list[str]]:
    """Tensors absent from some checkpoints, from the safetensors headers alone (cheap, before the scan).

    A tensor missing from a checkpoint almost always means checkpoints of different models (a 2-layer
    and a 4-layer one): an error naming the checkpoint and a few tensors, unless ``allow_missing``.
    """
    from ptlens.weights.index import CheckpointIndex
    from ptlens.weights.scan import plan_tensors

    indexes = [CheckpointIndex.from_dir(c.path, allow_pickle=allow_pickle) for c in lineage.checkpoints]
    _, missing, _ = plan_tensors(indexes, lineage.names, layer_pattern)
    if missing and not allow_missing:
        by_cp: dict[str, list[str]] = {}
        for name, where in missing.items():
            for cp in where:
                by_cp.setdefault(cp, []).append(name)
        cp, names = max(by_cp.items(), key=lambda kv: len(kv[1]))
        shown = ", ".join(names[:3]) + (f" … ({len(names)} in all)" if len(names) > 3 else "")
        others = f"; {len(by_cp) - 1} other checkpoint(s) also lack tensors" if len(by_cp) > 1 else ""
        raise PtlensError(f"checkpoint {cp} lacks {len(names)} tensor(s) the others have: {shown}{others} — "
                          "not the same architecture? (--allow-missing compares only the tensors present)")
    return missing


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


class LineProgress:
    """Progress as plain lines, for output that is not a terminal (a log file, CI): a line when a task
    starts, then at most every ``every_s`` seconds or each ``step`` share of it, and when it ends."""

    def __init__(self, out: Optional[Console] = None, every_s: float = 30.0, step: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        self.out = self.console = out or console
        self.every_s, self.step, self.clock = every_s, step, clock
        self.tasks: dict[int, dict] = {}

    def add_task(self, description: str, total: Optional[float] = None, completed: float = 0, unit: str = "",
                 **_: object) -> int:
        tid = len(self.tasks)
        now = self.clock()
        self.tasks[tid] = dict(description=description, total=total, done=completed, unit=unit, start=now,
                               start_done=completed, last_t=now, last_share=(completed / total) if total else 0.0)
        self._line(tid, "started" if not completed else "continuing")
        return tid

    def advance(self, tid: int, n: float) -> None:
        self.update(tid, completed=self.tasks[tid]["done"] + n)

    def update(self, tid: int, completed: Optional[float] = None, total: Optional[float] = None, **_: object) -> None:
        t = self.tasks[tid]
        if total is not None:
            t["total"] = total
        if completed is not None:
            t["done"] = completed
        now = self.clock()
        share = t["done"] / t["total"] if t["total"] else 0.0
        finished = bool(t["total"]) and t["done"] >= t["total"]
        if finished or now - t["last_t"] >= self.every_s or share - t["last_share"] >= self.step - 1e-12:
            t["last_t"], t["last_share"] = now, share
            self._line(tid, "done" if finished else "")

    def _line(self, tid: int, state: str) -> None:
        t = self.tasks[tid]
        elapsed = self.clock() - t["start"]
        unit = f" {t['unit']}" if t["unit"] else ""
        fmt = ",.0f" if float(t["total"] or t["done"]).is_integer() or (t["total"] or 0) >= 100 else ",.1f"
        if t["total"]:
            pct = 100.0 * t["done"] / t["total"]
            body = f"{t['done']:{fmt}}/{t['total']:{fmt}}{unit} ({pct:.0f}%)"
        else:
            body = f"{t['done']:{fmt}}{unit}"
        rate = (t["done"] - t["start_done"]) / elapsed if elapsed > 0 else 0.0
        eta = ""
        if t["total"] and rate > 0 and t["done"] < t["total"]:
            eta = f", about {(t['total'] - t['done']) / rate:.0f} s left"
        suffix = f" {state}" if state else ""
        self.out.print(f"{t['description']}: {body}, {elapsed:.0f} s{eta}{suffix}", markup=False, highlight=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None
