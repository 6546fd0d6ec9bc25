"""Thread counts from the free cores and the size of the work; no spin-waiting; progress lines off a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from rich.console import Console

from ptlens import threads
from ptlens.progress import LineProgress


def test_free_cores_counts_the_threads_running_now(monkeypatch):
    """Not the 1-minute load average, which still counts a command that ended seconds ago."""
    monkeypatch.setattr(threads, "running_now", lambda *a, **k: 0.0)
    assert threads.free_cores(cores=2) == 2
    monkeypatch.setattr(threads, "running_now", lambda *a, **k: 1.0)
    assert threads.free_cores(cores=2) == 1


def test_free_cores_subtracts_the_running_load():
    assert threads.free_cores(cores=2, load=0.0) == 2
    assert threads.free_cores(cores=2, load=1.0) == 1  # one busy competitor on 2 cores: one thread
    assert threads.free_cores(cores=2, load=7.0) == 1  # never zero
    assert threads.free_cores(cores=16, load=3.4) == 13


def test_choose_threads_small_work_and_override():
    assert threads.choose_threads(work_elems=96 * 256, cores=8, load=0.0, env={}) == 1
    assert threads.choose_threads(work_elems=4096 * 14336, cores=8, load=2.0, env={}) == 6
    assert threads.choose_threads(work_elems=None, cores=8, load=0.0, env={"PTLENS_THREADS": "3"}) == 3


def test_configure_environment_never_spins_and_keeps_user_settings():
    env = {"OMP_NUM_THREADS": "7"}
    n = threads.configure_environment(2, env=env)
    assert n == 2
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["KMP_BLOCKTIME"] == "0" and env["GOMP_SPINCOUNT"] == "0"
    assert env["OMP_NUM_THREADS"] == "7" and env["MKL_NUM_THREADS"] == "2"


def test_cli_sets_the_environment_before_torch_loads():
    """In a fresh interpreter, the CLI's root callback runs before any command imports torch."""
    code = ("import os, sys; from ptlens.cli import app\n"
            "try:\n    app(['presets'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules\n"
            "import torch\n"
            "print(os.environ['OMP_WAIT_POLICY'], os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "KMP_", "GOMP_", "PTLENS_"))}
    env["PTLENS_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-3:] == ["PASSIVE", "1", "1"]


def test_line_progress_reports_every_tenth_and_every_30_s():
    buf = io.StringIO()
    now = [0.0]
    p = LineProgress(Console(file=buf, width=200), clock=lambda: now[0])
    t = p.add_task("base: sample", total=100, unit="samples")
    for _ in range(100):
        now[0] += 0.1
        p.advance(t, 1)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("base: sample: 0/100 samples (0%)") and lines[0].endswith("started")
    assert len(lines) == 11 and lines[-1].startswith("base: sample: 100/100 samples (100%)") and "done" in lines[-1]
    buf.truncate(0), buf.seek(0)
    t = p.add_task("slow", total=1000, completed=10)
    now[0] += 31
    p.advance(t, 1)
    assert "11/1,000" in buf.getvalue().splitlines()[-1] and "continuing" in buf.getvalue().splitlines()[0]


def test_running_now_sees_a_competitor_at_once():
    """A busy process started a moment ago counts, though the 1-minute load average has not caught up."""
    import time

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        seen = max(threads.running_now(samples=5) for _ in range(3))
    finally:
        busy.kill()
        busy.wait()
    assert seen >= 1  # at least the competitor (others may be running too)
