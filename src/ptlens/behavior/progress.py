"""Progress of a behaviour run: rich bars (samples/s, ETA) per model, or plain lines in a log, and one time estimate."""

from __future__ import annotations

import time

class Progress:
    """Rich progress bars (samples/s and ETA) per model, or nothing."""

    def __init__(self, enabled: bool):
        self.bar = None
        self.started: dict = {}  # task → (when it was added, its unit), until its first batch
        self.estimated: set[str] = set()
        self.left: dict[str, int] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                                       TimeRemainingColumn)
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task):
                    return Text(f"{task.speed:.1f} {task.fields.get('unit', 'samples')}/s" if task.speed else "")

            console = Console(stderr=True)
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                                TimeRemainingColumn(), console=console, transient=False)
            if not console.is_terminal:  # a log file: a line per step and every 10% or 30 s, not one at the end
                from ptlens.progress import LineProgress

                self.bar = LineProgress(console)

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def task(self, description: str, total: int, done: int = 0, unit: str = "samples"):
        if not self.bar:
            return None
        tid = self.bar.add_task(description, total=total, completed=done, unit=unit)
        self.started[tid] = (time.monotonic(), unit)
        return tid

    def advance(self, task, n: int) -> None:
        if self.bar and task is not None:
            self.bar.advance(task, n)
            self._estimate(task, n)

    def plan(self, **left: int) -> None:
        """What the whole run has left to do, by unit (samples, responses): the first batch of each gives a time."""
        self.left = dict(left)

    def _estimate(self, task, n: int) -> None:
        """After the first batch of a unit: how long all of that unit's work (every model) takes at this rate."""
        from ptlens.progress import duration_text

        t0, unit = self.started.pop(task, (None, None))
        if t0 is None or unit in self.estimated or not self.left.get(unit):
            return
        self.estimated.add(unit)
        rate = n / max(time.monotonic() - t0, 1e-9)
        what = "drawing and grading" if unit == "samples" else "scoring"
        self.note(f"{what}: {self.left[unit]:,} {unit} in all at {rate:.1f}/s (first batch) → about "
                  f"{duration_text(self.left[unit] / rate)}")

    def note(self, message: str) -> None:
        if self.bar:
            self.bar.console.print(message, markup=False, highlight=False)
