"""Progress as plain lines, for output that is not a terminal (a log file, CI).

Core, below every stage: the behaviour run falls back to it when its console is not a terminal, and the CLI uses it
for the weight scan; neither needs the other to print progress.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from rich.console import Console


def duration_text(seconds: float) -> str:
    """A duration as people say it: 40 s, 12 min, 3 h 20 min, 2.5 days."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        h, m = divmod(round(seconds / 60), 60)
        return f"{h} h {m} min" if m else f"{h} h"
    return f"{seconds / 86400:.1f} days"


class LineProgress:
    """Progress as plain lines, for output that is not a terminal (a log file, CI): a line when a task
    starts, then at most every ``every_s`` seconds or each ``step`` share of it, and when it ends."""

    def __init__(self, out: Optional[Console] = None, every_s: float = 30.0, step: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        self.out = self.console = out or Console(stderr=True)
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
            eta = f", about {duration_text((t['total'] - t['done']) / rate)} left"
        suffix = f" {state}" if state else ""
        self.out.print(f"{t['description']}: {body}, {elapsed:.0f} s{eta}{suffix}", markup=False, highlight=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None
