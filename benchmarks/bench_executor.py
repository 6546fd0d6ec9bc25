"""The weight scan's executors side by side on one machine: in-process (``local``) against Ray tasks (``ray``).

One run, one Python (one with Ray: the project's ``.venv-vllm`` by default), the same lineage with its files
warmed into the page cache first. A Ray head is started for the run (all cores, its own temp dir) and the
``ray`` scans reach it through ``RAY_ADDRESS`` — the steady state of a cluster; one more ``ray`` scan without
``RAY_ADDRESS`` shows the one-off cost of ``ray.init()`` starting a local cluster, and one driver maps the
tasks on Ray twice then locally, to part the cost of new worker processes from the per-task cost. Each scan is
``ptlens weights`` as a subprocess; we report wall time, ptlens's own scan timer (plan + tasks + merge,
no start-up or writing), the driver's peak RSS (Ray workers are not its children: not counted), and
whether tensors.csv is byte-identical to the in-process one. Runs alternate local / ray ``--repeat``
times; the table shows each and the ratio of the medians.

    python benchmarks/bench_executor.py /tmp/lin8b-2 [--python .venv-vllm/bin/python] [--spectral off] \
        [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_weights import LABELS, RAW_READ, lineage_bytes, run_measured  # noqa: E402


SAME_DRIVER = r"""
import json, sys, time
import ray
from ptlens.resolve import resolve_lineage
from ptlens.weights.executors import LocalExecutor, RayExecutor
from ptlens.weights.config import ScanConfig
from ptlens.weights.plan import plan_scan

plan = plan_scan(resolve_lineage(models=sys.argv[2:]), ScanConfig(spectral=sys.argv[1]))
ray.init(log_to_driver=False)
out = {}
for label, ex in (("ray, new workers", RayExecutor()), ("ray, warm workers", RayExecutor()), ("local", LocalExecutor())):
    t0 = time.perf_counter()
    res = ex.map(plan.tasks)
    out[label] = [round(time.perf_counter() - t0, 2), round(sum(r.seconds for r in res), 2)]
print(json.dumps(out))
"""


def start_head(python: str, env: dict) -> tuple[subprocess.Popen, str, str]:
    ray = str(Path(python).parent / "ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="pbe", dir="/tmp")
    head = subprocess.Popen([ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                             f"--num-cpus={os.cpu_count()}", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}", "--block"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    deadline = time.time() + 300
    while not list(Path(temp).glob("session_latest/logs/raylet.out")):
        if head.poll() is not None or time.time() > deadline:
            raise SystemExit("ray start failed")
        time.sleep(0.5)
    time.sleep(2)
    return head, f"127.0.0.1:{port}", temp


def stop_head(head: subprocess.Popen, temp: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(head.pid, sig)
            head.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    shutil.rmtree(temp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lineage", type=Path)
    ap.add_argument("--python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--spectral", default="off")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    py = a.python
    root = a.lineage
    total = lineage_bytes(root)
    files = [str(f) for l in LABELS for f in sorted((root / l).glob("*.safetensors"))]
    models = [f"{l}={root / l}" for l in LABELS]
    out = Path(tempfile.mkdtemp(prefix="ptlens-bexec-"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO / "src")
    env.setdefault("RAY_AUTH_MODE", "disabled")  # `ray start` enables token auth when ~/.ray/auth_token exists
    env.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"ptlens-numba-{Path(py).parent.parent.name}"))
    print(f"lineage {root}: {total / 1e9:.2f} GB in {len(files)} files; warming the page cache …", flush=True)
    run_measured([sys.executable, "-c", RAW_READ, *files])
    head, address, temp = start_head(py, env)
    rows = []
    try:
        def scan(label: str, executor: str, ray_address: str | None, extra: list[str] = (), record: bool = True):
            d = out / f"{label}"
            e = dict(env, **({"RAY_ADDRESS": ray_address} if ray_address else {}))
            argv = [py, "-m", "ptlens", "weights", "--models", *models, "--no-figures", "--spectral", a.spectral,
                    "--executor", executor, "--output-dir", str(d), *extra]
            t0 = time.perf_counter()
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t0
            err = p.stderr.read().decode(errors="replace")
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"{label} failed: {err[-2000:]}")
            summary = json.loads((d / "weights" / "summary.json").read_text())
            row = {"label": label, "executor": executor, "wall": wall, "scan": summary["seconds"],
                   "rss": ru.ru_maxrss * 1024, "csv": (d / "weights" / "tensors.csv")}
            if record:
                rows.append(row)
                print(f"- {label}: wall {wall:.1f} s, scan {summary['seconds']:.1f} s", flush=True)
            return row

        # numba compiles the bf16 kernels once into its cache: neither executor should pay for it below
        scan("warm-up local", "local", None, ["--layer-pattern", r"layers\.0\.(input_layernorm|self_attn\.k_proj)"], False)
        scan("warm-up ray", "ray", address, ["--layer-pattern", r"layers\.0\.(input_layernorm|self_attn\.k_proj)"], False)
        for r in range(a.repeat):
            scan(f"local #{r + 1}", "local", None)
            scan(f"ray, running cluster #{r + 1}", "ray", address)
        scan("ray, ray.init() starts a local cluster", "ray", None)
        print("- in one driver: ray twice (cold, then warm workers), then local …", flush=True)
        p = subprocess.run([py, "-c", SAME_DRIVER, a.spectral, *models], capture_output=True, text=True,
                           env=dict(env, RAY_ADDRESS=address))
        same_driver = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"error": p.stderr[-500:]}
    finally:
        stop_head(head, temp)
    ref = rows[0]["csv"].read_bytes()
    med = {ex: statistics.median(r["scan"] for r in rows if r["executor"] == ex and "starts" not in r["label"])
           for ex in ("local", "ray")}
    medw = {ex: statistics.median(r["wall"] for r in rows if r["executor"] == ex and "starts" not in r["label"])
            for ex in ("local", "ray")}
    lines = ["| run | wall (s) | scan (s) | scan GB/s | driver peak RSS (GB) | tensors.csv = local #1 |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        same = "yes" if r["csv"].read_bytes() == ref else "NO"
        lines.append(f"| {r['label']} | {r['wall']:.1f} | {r['scan']:.1f} | {total / r['scan'] / 1e9:.2f} | "
                     f"{r['rss'] / 1e9:.2f} | {same} |")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    ratio = med["ray"] / med["local"]
    print(f"\n{root} — {total / 1e9:.2f} GB lineage, --spectral {a.spectral}, {machine}\n\n" + "\n".join(lines))
    print("\nin one driver (task wall s, sum of task s):", json.dumps(same_driver))
    print(f"\nmedian scan: local {med['local']:.1f} s, ray {med['ray']:.1f} s → ray/local = {ratio:.3f} "
          f"(wall: {medw['ray'] / medw['local']:.3f}); goal ≤ 1.10")
    if a.json:
        a.json.write_text(json.dumps({"lineage": str(root), "bytes": total, "machine": machine, "spectral": a.spectral,
                                      "rows": [{k: (str(v) if k == "csv" else v) for k, v in r.items()} for r in rows],
                                      "median_scan": med, "median_wall": medw, "ratio": ratio,
                                      "same_driver": same_driver}, indent=2))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
