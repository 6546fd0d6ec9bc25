"""Hub problem sets without a network: one line, at once, instead of the datasets library's retries."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("datasets")

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_unreachable_hub_fails_in_one_line(tmp_path):
    """HF_ENDPOINT on a closed local port: no real network is touched, and nothing is cached in HF_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=SRC,
               PTLENS_THREADS="1", OMP_NUM_THREADS="1")
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "ptlens", "behavior", "--problems", "gsm8k", "--output-dir",
                        str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    took = time.monotonic() - start
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("ptlens: error: --problems: openai/gsm8k (test): "
                                                   "http://127.0.0.1:9 is unreachable"), p.stderr
    assert "not in the cache" in lines[0] and "--problems builtin" in lines[0]
    assert took < 120, took  # it retried for ~25 s beyond start-up before; start-up alone is seconds
    assert not (tmp_path / "out").exists()


def test_hub_unreachable_answers_fast(monkeypatch):
    from huggingface_hub import constants

    from ptlens.behavior.problems import hub_unreachable

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    why = hub_unreachable(timeout=2.0)
    assert why is not None and "http://127.0.0.1:9 is unreachable" in why
    assert time.monotonic() - start < 5
