"""The weight scan as tasks: any split of the tasks merges to the same bytes, and the Ray executor on a real
local cluster writes the tensors.csv of the in-process scan, also when a worker dies mid-scan.

The Ray tests need a Python with Ray (the project's ``.venv-vllm``, made by ``scripts/install-vllm-cpu.sh``
as in CI; or ``PTLENS_RAY_PYTHON``); the main environment has none, so they run that Python in
subprocesses and skip, saying so, without one.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
from ray_head import ray_head as start_ray_head
import torch

from ptlens.errors import PtlensError
from ptlens.resolve import resolve_lineage
from ptlens.weights import kernels as K
from ptlens.weights.aggregate import all_aggregates
from ptlens.weights.executors import EXECUTORS, LocalExecutor, get_executor, task_memory
from ptlens.weights.outputs import write_tensors_csv
from ptlens.weights.driver import scan_lineage
from ptlens.weights.config import ScanConfig
from ptlens.weights.plan import plan_scan
from ptlens.weights.records import merge_results
from ptlens.weights.tensor_scan import scan_tensor

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "src" / "ptlens" / "data" / "tiny"
MODELS = [f"{n}={TINY / n}" for n in ("base", "sft", "dpo", "rlvr")]
PATTERN = r"layers\.0\.|embed_tokens|lm_head"  # 11 of the 39 tensors: every kind, a few seconds


def _csv(result, tmp: Path) -> bytes:
    path = tmp / f"t{random.random()}.csv"
    write_tensors_csv(result, path)
    return path.read_bytes()


def _aggregates(result) -> str:
    return json.dumps(all_aggregates(result.records, result.pairs), sort_keys=True, default=repr)


def test_any_split_of_the_tasks_merges_to_the_same_bytes(tmp_path):
    """Tasks cut into random parts, each part scanned in a shuffled order with its own thread count and its tasks
    sent through pickle (as to another process), then merged in a random order: the tensors.csv and every
    aggregate are bit-identical to the in-process scan. A task lost or returned twice is an error, not a quiet gap."""
    lineage = resolve_lineage(models=MODELS)
    cfg = ScanConfig(spectral="topk", k=4, layer_pattern=PATTERN, workers=1)
    serial = scan_lineage(lineage, cfg)
    plan = plan_scan(lineage, cfg)
    assert len(plan.tasks) == 11 and [t.index for t in plan.tasks] == list(range(11))
    want_csv, want_agg = _csv(serial, tmp_path), _aggregates(serial)
    assert len(serial.records) == 11 * 5 and len(serial.pairs) > 0
    rng = random.Random(0)
    threads_before = numba.get_num_threads()
    try:
        for trial in range(2):
            tasks = list(plan.tasks)
            rng.shuffle(tasks)
            cut = sorted(rng.sample(range(1, len(tasks)), 2))
            parts = [tasks[:cut[0]], tasks[cut[0]:cut[1]], tasks[cut[1]:]]
            results = []
            for i, part in enumerate(parts):
                numba.set_num_threads(min(1 + i, numba.config.NUMBA_NUM_THREADS))
                results.append([scan_tensor(pickle.loads(pickle.dumps(t))) for t in part])
            rng.shuffle(results)
            merged = merge_results(plan, lineage, [r for part in results for r in part], serial.seconds)
            assert _csv(merged, tmp_path) == want_csv, f"trial {trial}"
            assert _aggregates(merged) == want_agg
            assert merged.bytes_read == serial.bytes_read > 0
    finally:
        numba.set_num_threads(threads_before)
    one = scan_tensor(plan.tasks[0])
    everything = [scan_tensor(t) for t in plan.tasks[1:]]
    with pytest.raises(PtlensError, match="no result for 1 tensor"):
        merge_results(plan, lineage, everything, 0.0)
    with pytest.raises(PtlensError, match="returned twice"):
        merge_results(plan, lineage, [one, one, *everything], 0.0)


@pytest.mark.may_skip  # needs two numba threads
def test_fused_kernel_sums_are_the_same_bits_whatever_the_thread_count():
    """The element-wise sums of a 1M-entry bf16 chunk with 1 and with 2 numba threads are bit-identical (the
    partial sums run over a split fixed by the chunk's length), and equal the float64 torch reference closely."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba was started with one thread (NUMBA_NUM_THREADS=1)")
    g = torch.Generator().manual_seed(1)
    a = (0.02 * torch.randn(1 << 20, generator=g)).to(torch.bfloat16)
    b = (a.float() + 1e-3 * torch.randn(1 << 20, generator=g) * (torch.rand(1 << 20, generator=g) < 0.3)).to(torch.bfloat16)
    c = (b.float() + 1e-3 * torch.randn(1 << 20, generator=g)).to(torch.bfloat16)
    R = [x.view(torch.int16).numpy() for x in (a, b, c)]
    trans, pairs = [(0, 1), (1, 2), (0, 2)], [(0, 1)]
    before = numba.get_num_threads()
    try:
        out = {}
        for n in (1, 2):
            numba.set_num_threads(n)
            out[n] = K.stats_numba(R, R, trans, trans, pairs, 1e-5)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(out[1][0], out[2][0]) and np.array_equal(out[1][1], out[2][1])
    X = torch.stack([a.float(), b.float(), c.float()])
    ref_t, ref_p = K.stats_torch(X, X.view(torch.int32), trans, trans, pairs, 1e-5)
    np.testing.assert_allclose(out[1][0], ref_t, rtol=1e-9)
    np.testing.assert_allclose(out[1][1], ref_p, rtol=1e-9)
    assert 0.25 < out[1][0][0, K.N_EXACT] / (1 << 20) < 0.35  # the planted 30% of changed entries


def test_task_memory_follows_the_scans_bounds():
    """Ray's memory request: bounded by the chunk for element-wise work whatever the matrix size; topk adds the
    resident budget at most; full grows with the matrix (it materialises it). Small tensors ask for little."""
    from ptlens.weights.index import TensorInfo

    import dataclasses

    base = plan_scan(resolve_lineage(models=MODELS), ScanConfig(spectral="off", layer_pattern="lm_head")).tasks[0]
    assert len(base.transitions) == 5

    def task(shape, spectral, n=4):
        info = TensorInfo("w", Path("/x"), "BF16", shape, 0, 2 * int(np.prod(shape)))
        return dataclasses.replace(base, infos=(info,) * n,
                                   config=ScanConfig(spectral=spectral, chunk_mb=32, spectral_resident_mb=256))

    mib = 1 << 20
    small, big, huge = (256, 96), (128256, 4096), (1_000_000, 16384)
    assert task_memory(task((96,), "off")) < 400 * mib
    assert task_memory(task(big, "off")) == task_memory(task(huge, "off")) <= 384 * mib + 8 * 32 * mib
    assert task_memory(task(small, "topk")) < task_memory(task(big, "topk")) <= task_memory(task(huge, "topk"))
    assert task_memory(task(big, "topk")) <= 384 * mib + 8 * 32 * mib + (4 + 5) * 32 * mib
    assert task_memory(task(huge, "full")) > 4 * 4 * huge[0] * huge[1]


@pytest.mark.may_skip  # the message is only reachable where ray is absent
def test_executor_registry_and_the_missing_ray_message():
    """``local`` and ``ray`` in one registry; an unknown name lists them; without Ray the error is one line
    naming the extra to install, before any work."""
    assert list(EXECUTORS) == ["local", "ray"] and isinstance(get_executor("local"), LocalExecutor)
    with pytest.raises(PtlensError, match="local, ray"):
        get_executor("dask")
    try:
        import ray  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ray is installed in this Python")
    with pytest.raises(PtlensError) as e:
        get_executor("ray")
    assert "pip install 'ptlens[ray]'" in str(e.value) and "\n" not in str(e.value)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    p = subprocess.run([sys.executable, "-m", "ptlens", "weights", "--executor", "ray", "--models", *MODELS[:2],
                        "--output-dir", str(Path(tempfile.mkdtemp()) / "o")], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "pip install 'ptlens[ray]'" in p.stdout + p.stderr, p.stdout + p.stderr


# ---------------------------------------------------------------- Ray on a real local cluster


def _ray_python() -> str | None:
    for cand in (os.environ.get("PTLENS_RAY_PYTHON"), os.environ.get("PTLENS_VLLM_PYTHON"),
                 REPO / ".venv-vllm" / "bin" / "python"):
        if cand and Path(cand).exists():
            ok = subprocess.run([str(cand), "-c", "import ray"], capture_output=True).returncode == 0
            if ok:
                return str(cand)
    return None


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head on 127.0.0.1 (2 CPUs, its own temp dir), stopped after the module by its process group."""
    python = _ray_python()
    if python is None:
        pytest.skip("no Python with Ray: run scripts/install-vllm-cpu.sh (makes .venv-vllm) or set PTLENS_RAY_PYTHON")
    # workers import this checkout's ptlens; numba caches apart, since this Python's numba differs from the main one's
    env = {"PYTHONPATH": str(REPO / "src"),
           "NUMBA_CACHE_DIR": str(Path(tempfile.gettempdir()) / f"ptlens-numba-{Path(python).parent.parent.name}")}
    with start_ray_head(python, env, prefix="pte") as head:
        yield head


def _cli(head, executor: str, out: Path, address: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in head["env"].items() if k != "RAY_ADDRESS"}
    if address:
        env["RAY_ADDRESS"] = head["address"]
    p = subprocess.run([head["python"], "-m", "ptlens", "weights", "--models", *MODELS, "--layer-pattern", PATTERN,
                        "--spectral", "topk", "--k", "4", "--workers", "1", "--no-figures", "--executor", executor,
                        "--output-dir", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return p


@pytest.mark.slow
def test_ray_executor_writes_the_serial_tensors_csv(ray_head, tmp_path):
    """``ptlens weights --executor ray`` with RAY_ADDRESS at a running head: the same tensors.csv and aggregates
    as ``--executor local`` in the same Python, and the scan's driver ran on that head (its driver log is there)."""
    _cli(ray_head, "local", tmp_path / "local", address=False)
    p = _cli(ray_head, "ray", tmp_path / "ray", address=True)
    a, b = (tmp_path / d / "weights" for d in ("local", "ray"))
    assert (a / "tensors.csv").read_bytes() == (b / "tensors.csv").read_bytes()
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["aggregates"] == sb["aggregates"] and sa["bytes_read"] == sb["bytes_read"] > 0
    assert len((a / "tensors.csv").read_text().splitlines()) == 1 + 11 * 5
    logs = ray_head["temp"] / "session_latest" / "logs"
    assert list(logs.glob("python-core-driver-*")), "no driver connected to the test's head"
    assert "error" not in p.stdout.lower()


KILLED = r"""
import os, sys
from pathlib import Path
from ptlens.resolve import resolve_lineage
from ptlens.weights.executors import RayExecutor, _run_task
from ptlens.weights.outputs import write_tensors_csv
from ptlens.weights.driver import scan_lineage
from ptlens.weights.config import ScanConfig
from ptlens.weights.plan import plan_scan
from ptlens.weights.tensor_scan import scan_tensor

models, pattern, out, marker = sys.argv[1].split(","), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
cfg = ScanConfig(spectral="topk", k=4, layer_pattern=pattern, workers=1)
lineage = resolve_lineage(models=models)
victim = plan_scan(lineage, cfg).tasks[5].name   # a tensor in the middle of the scan


def die_once(task, threads):
    # first attempt at the victim: the worker process dies after reading the tensor's first chunk
    if task.name == victim and not marker.exists():
        marker.write_text(str(os.getpid()))
        scan_tensor(task, progress=lambda nbytes, name: os._exit(1))
    if task.name == victim:
        Path(str(marker) + ".retried").write_text(str(os.getpid()))
    return _run_task(task, threads)


class DyingRay(RayExecutor):
    task_fn = staticmethod(die_once)


write_tensors_csv(scan_lineage(lineage, cfg), out / "local.csv")
write_tensors_csv(scan_lineage(lineage, cfg, executor=DyingRay(max_retries=2, driver_helps=False)), out / "ray.csv")
print("victim", victim)
"""


@pytest.mark.slow
def test_a_ray_worker_killed_mid_scan_is_retried_and_changes_nothing(ray_head, tmp_path):
    """A worker that dies (``os._exit``) inside one tensor's task, after reading its first chunk: Ray retries the
    task on a new worker (``max_retries``) and the tensors.csv equals the in-process scan's."""
    marker = tmp_path / "died"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    env = {**ray_head["env"], "RAY_ADDRESS": ray_head["address"]}
    p = subprocess.run([ray_head["python"], str(script), ",".join(MODELS), PATTERN, str(tmp_path), str(marker)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    died, retried = int(marker.read_text()), int(Path(str(marker) + ".retried").read_text())
    assert died != retried  # the retry ran in another worker process: the first one is gone
    assert (tmp_path / "local.csv").read_bytes() == (tmp_path / "ray.csv").read_bytes()
