"""Figures drawn by helper processes started at launch, so that their imports overlap the scan.

Drawing a run's figures costs about as much as scanning a 1B pair's weights: importing
matplotlib, then laying out and rasterising each figure. All of it is single-threaded
Python, while the scan before it keeps the cores busy only once torch and numba are loaded.
A :class:`FigurePool` starts its workers when the command starts: each imports matplotlib
and the figure module while the main process imports torch and scans, then draws figures
sent to it as ``(function, arguments)`` jobs over a pipe, several figures at once.

Every worker failure (could not start, died, raised) falls back to drawing that figure in the
calling process, so a pool changes only when figures are drawn, never what is drawn.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

NOT_DRAWN = "figures_not_drawn.json"
"""Beside the figures of each folder (weights/, behavior/, mechanism/, report/): {file name: why it was not drawn},
for the figures of the last drawing that are missing; absent when every figure was drawn."""


class NothingToDraw(Exception):
    """Raised by a figure function whose data this run lacks (``--spectral off``, no transplant rows …)."""


def figure(fn: Callable) -> Callable:
    """Wrap a figure function (one of whose arguments is the ``.png`` path): a figure that raises is not drawn and
    never stops the run, and whatever is not drawn gets its reason in ``NOT_DRAWN`` beside it (removed once drawn)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        path = next((Path(a) for a in [*args, *kwargs.values()] if isinstance(a, (str, Path))
                     and str(a).endswith(".png")), None)
        try:
            made = fn(*args, **kwargs)
            why = None if made is not None else "nothing to draw"
        except NothingToDraw as e:
            made, why = None, f"nothing to draw: {e}"
        except Exception as e:  # noqa: BLE001 - a figure must not cost the run: it is counted and named instead
            made, why = None, f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            plt = sys.modules.get("matplotlib.pyplot")
            if plt is not None:
                plt.close("all")  # the half-drawn figure (figures are drawn one at a time per process)
        if path is not None:
            note_figure(path, why)
        return made

    return wrapper


def note_figure(path: Path, why: str | None) -> None:
    """Record (or, ``why`` None, clear) why the figure at ``path`` is missing, in ``NOT_DRAWN`` beside it.

    Pool workers draw in parallel into the same folder: the read-modify-write holds an flock on the folder.
    """
    import fcntl

    folder = Path(path).parent
    if why is None and not (folder / NOT_DRAWN).exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        f = folder / NOT_DRAWN
        try:
            notes = json.loads(f.read_text()) if f.exists() else {}
        except ValueError:
            notes = {}
        if why is None:
            notes.pop(Path(path).name, None)
        else:
            notes[Path(path).name] = why
        if notes:
            tmp = f.with_name(f".{f.name}.tmp")
            tmp.write_text(json.dumps(dict(sorted(notes.items())), indent=1, ensure_ascii=False) + "\n")
            tmp.replace(f)
        else:
            f.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


def figures_not_drawn(output_dir: Path) -> dict[str, str]:
    """Every figure of a results folder that is missing, as {path relative to it: why}."""
    out = {}
    for f in sorted(Path(output_dir).glob(f"*/{NOT_DRAWN}")):
        try:
            notes = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        out.update({f"{f.parent.name}/{name}": why for name, why in notes.items()})
    return out


Job = tuple[str, Sequence[Any]]
"""``("module:function", args)``: small JSON values (pass large inputs as a file's path: jobs are all written
before any reply is read); the function returns a JSON value, e.g. the figure's path or None."""


def _call(job: Job) -> Any:
    target, args = job
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(*args)


class FigurePool:
    """``workers`` processes that have imported ``modules`` and draw jobs in parallel."""

    def __init__(self, workers: int, modules: Sequence[str]):
        from ptlens import threads

        env = dict(os.environ)
        threads.configure_environment(1, env)  # drawing is single-threaded: no BLAS/OpenMP pools in the workers
        env.setdefault("MPLBACKEND", "Agg")
        self.procs: list[subprocess.Popen] = []
        for _ in range(max(0, workers)):
            try:
                self.procs.append(subprocess.Popen([sys.executable, "-m", "ptlens.figpool", *modules],
                                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                   stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1))
            except OSError:
                break

    def map(self, jobs: Sequence[Job]) -> list[Any]:
        """Each job's result, in order; jobs a worker could not draw are drawn here.

        Jobs go out one per worker and the next one to whichever worker answers first, so a slow figure
        does not hold back the ones queued behind it (list the slowest first).
        """
        import select

        results: list[Any] = [None] * len(jobs)
        done = [False] * len(jobs)
        queue = list(range(len(jobs)))
        busy: dict[int, tuple[subprocess.Popen, int]] = {}  # stdout fd → (worker, job)

        def send(proc: subprocess.Popen) -> None:
            while queue:
                i = queue.pop(0)
                try:
                    proc.stdin.write(json.dumps({"job": list(jobs[i])}) + "\n")
                    proc.stdin.flush()
                except (OSError, ValueError):  # this worker is gone: its job is drawn below, it gets no other
                    return
                busy[proc.stdout.fileno()] = (proc, i)
                return

        for proc in self.procs:
            if proc.poll() is None:
                send(proc)
        while busy:
            ready, _, _ = select.select(list(busy), [], [])
            for fd in ready:
                proc, i = busy.pop(fd)
                try:
                    reply = json.loads(proc.stdout.readline() or "null")
                except (OSError, ValueError):
                    reply = None
                if reply and "result" in reply:
                    results[i], done[i] = reply["result"], True
                    send(proc)
                elif reply is None:  # died: stop using it
                    proc.kill()
        for i, ok in enumerate(done):
            if not ok:
                results[i] = _call(jobs[i])
        return results

    def shutdown(self) -> None:
        """Tell the workers to exit, without waiting: they wind down while the caller prints (``close`` waits)."""
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass

    def close(self) -> None:
        self.shutdown()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []

    def __enter__(self) -> "FigurePool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start(jobs_expected: int, modules: Sequence[str]) -> FigurePool | None:
    """A pool sized to the figures to come and the cores free for them; None on a single core.

    One worker costs no CPU the caller would not spend (its matplotlib import replaces the caller's) and
    lets that import overlap the scan, so there is one wherever there are two cores; more only on cores
    other work leaves free. Start it as early as the caller can, before importing torch or numba, and
    close it when done (a ``with`` block): whoever starts a pool owns it."""
    from ptlens import threads

    if threads.usable_cores() < 2 or jobs_expected < 1:
        return None
    return FigurePool(min(jobs_expected, threads.free_cores(), 4), modules)


def _serve(modules: Sequence[str]) -> None:
    for m in modules:
        importlib.import_module(m)
    for line in sys.stdin:
        try:
            target, args = json.loads(line)["job"]
            reply = {"result": _call((target, args))}
        except Exception:  # reported to the caller, which draws the figure itself
            reply = {"error": traceback.format_exc(limit=3)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve(sys.argv[1:])
