"""Figure workers (ptlens.figpool): the same files as drawing in-process, a fallback for every worker failure,
no pool where it cannot help, and a weights command whose own process never imports matplotlib."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ptlens import figpool
from ptlens.results import files as F
from ptlens.weights.outputs import draw_figures
from test_figures import summary


def _pngs(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_pool_draws_the_files_drawing_in_process_draws(tmp_path):
    s = summary()
    alone = draw_figures(s, tmp_path / "alone")
    with figpool.FigurePool(2, ["ptlens.weights.figures"]) as pool:
        assert len(pool.procs) == 2
        pooled = draw_figures(s, tmp_path / "pool", pool)
    assert list(pooled) == list(alone) and len(alone) >= 5
    assert _pngs(tmp_path / "pool") == _pngs(tmp_path / "alone")  # byte for byte
    assert not list((tmp_path / "pool").glob(".figures-*"))  # the summary handed to the workers is removed


def test_every_figure_name_a_worker_can_draw_is_a_registered_output():
    from pathlib import Path

    from ptlens.weights.figures import _planned

    assert list(_planned(summary(), Path("x"))) == [*F.WEIGHT_FIGURES, "overview"]


def test_dead_or_failing_workers_fall_back_to_drawing_here(tmp_path):
    s = summary()
    with figpool.FigurePool(2, ["ptlens.weights.figures"]) as pool:
        pool.procs[0].kill()
        pool.procs[0].wait()
        made = draw_figures(s, tmp_path / "a", pool)
    assert len(made) == 6 and all(p.is_file() for p in made.values())
    with figpool.FigurePool(1, ["ptlens.weights.figures"]) as pool:  # a job that raises in the worker
        with pytest.raises(FileNotFoundError):  # the worker's error, raised again by drawing it here
            pool.map([("ptlens.weights.figures:draw", ["overview", str(tmp_path / "missing.json"), str(tmp_path)])])
    with figpool.FigurePool(1, ["no.such.module"]) as pool:  # a worker that could not start its imports
        assert pool.map([("os.path:basename", ["/a/b.png"])]) == ["b.png"]


def test_pool_sized_by_the_free_cores_and_none_on_one_core(monkeypatch):
    from ptlens import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "free_cores", lambda *a, **k: 1)  # a busy machine: one worker, no more
    with figpool.start(6, ["json"]) as pool:
        assert len(pool.procs) == 1
    monkeypatch.setattr(threads, "free_cores", lambda *a, **k: 16)
    with figpool.start(6, ["json"]) as pool:
        assert len(pool.procs) == 4
    with figpool.start(2, ["json"]) as pool:
        assert len(pool.procs) == 2
    assert figpool.start(0, ["json"]) is None
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    assert figpool.start(6, ["json"]) is None


@pytest.mark.parametrize("dtype,torch_needed", [("bfloat16", False), ("float32", False), ("float16", True)])
def test_weights_command_leaves_matplotlib_to_the_workers(tmp_path, dtype, torch_needed):
    """The main process of ``ptlens weights --spectral off`` imports neither matplotlib (the workers draw)
    nor, for bf16 and float32 checkpoints, torch (1.1 s of start-up); float16 ones need torch's cast."""
    import torch
    from weights_helpers import base_weights, write_lineage

    dt = getattr(torch, dtype)
    args = write_lineage(tmp_path / "lin", {"a": base_weights(dt, seed=0), "b": base_weights(dt, seed=1)})
    code = ("import sys; from ptlens.cli import app; from ptlens import threads; threads.free_cores = lambda *a, **k: 2\n"
            "try: app(sys.argv[1:])\n"
            "except SystemExit as e: assert not e.code, e.code\n"
            "print('matplotlib' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, "weights", "--models", *args, "--spectral", "off",
                          "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == f"False {torch_needed}", out.stdout + out.stderr
    assert (tmp_path / "out" / F.WEIGHT_FIGURES["heatmap_rel_change"]).is_file()


def _pool_workers() -> list[int]:
    """Processes of ours that serve a figure pool (their parent is this test process)."""
    import os

    mine = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and "ptlens.figpool" in cmd:
            mine.append(int(pid))
    return mine


def test_the_weights_command_closes_its_pool_on_errors_too(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ptlens import threads
    from ptlens.cli import app

    monkeypatch.setattr(threads, "free_cores", lambda *a, **k: 2)
    started = []
    real = figpool.FigurePool.__init__
    monkeypatch.setattr(figpool.FigurePool, "__init__", lambda self, *a: started.append(self) or real(self, *a))
    res = CliRunner().invoke(app, ["weights", "--models", f"a={tmp_path / 'missing'}", "--output-dir",
                                   str(tmp_path / "out")])
    assert res.exit_code != 0 and len(started) == 1  # a pool was started, then the lineage failed to resolve
    assert _pool_workers() == []
