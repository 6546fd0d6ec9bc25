"""Peak memory and wall time of ``ptlens weights`` per spectral mode at Llama-3.1 8B / 70B / 405B shapes.

For each shape, a pair of one-layer bf16 checkpoints (embed_tokens, one layer's q/k/v/o and
gate/up/down, two norms, the final norm, lm_head): A is Gaussian (std 0.02), B = A + a planted
rank-4 update + small dense noise, so the spectral metrics have something to find (ΔW's top-16
energy ≈ the planted share). Files are written by streaming row blocks into a hand-made
safetensors layout (8-byte header length, JSON header, raw little-endian bytes), so a 405B pair
(~30 GB) never needs a tensor in memory; ``--delete`` removes each pair after it is measured.

Each mode runs as its own ``python -m ptlens weights`` subprocess; peak RSS is ``ru_maxrss`` of
that child (``os.wait4``), wall time is the child's. ``full`` may refuse before any work when the
exact SVDs would not fit the memory available (exit 2): the refusal line is recorded.

    python benchmarks/bench_memory.py --shapes 8b,70b --modes off,topk,full --dir /tmp/memory-bench --delete
    python benchmarks/bench_memory.py --shapes 405b --modes topk --layer-pattern lm_head --json out.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import torch

from ptlens.synth import LlamaShape
from ptlens.weights.memory import available_memory, full_memory_bytes

SHAPES = {
    "tiny": LlamaShape(vocab=1024, hidden=256, intermediate=512, layers=1, heads=4, kv_heads=2),  # a smoke test
    "8b": LlamaShape(vocab=128256, hidden=4096, intermediate=14336, layers=1, heads=32, kv_heads=8),
    "70b": LlamaShape(vocab=128256, hidden=8192, intermediate=28672, layers=1, heads=64, kv_heads=8),
    "405b": LlamaShape(vocab=128256, hidden=16384, intermediate=53248, layers=1, heads=128, kv_heads=8),
}
RANK, UPDATE, NOISE = 4, 2e-3, 2e-4  # planted update: rank, per-entry scale of the low-rank part, dense noise std
BLOCK = 1 << 24  # entries per streamed block


def _header(shapes: dict[str, tuple[int, ...]]) -> bytes:
    meta, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shp in shapes.items():
        n = 2 * int(torch.Size(shp).numel())
        meta[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(meta, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def make_pair(out: Path, shape: LlamaShape, seed: int = 0) -> int:
    """Write checkpoints A and B under ``out``; returns the bytes written."""
    shapes = shape.tensor_shapes()
    for d in ("A", "B"):
        (out / d).mkdir(parents=True, exist_ok=True)
        (out / d / "config.json").write_text(json.dumps(shape.config(), indent=2))
    head = _header(shapes)
    with open(out / "A" / "model.safetensors", "wb") as fa, open(out / "B" / "model.safetensors", "wb") as fb:
        fa.write(head)
        fb.write(head)
        for name, shp in shapes.items():
            g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            if len(shp) == 1:
                a = (1.0 + 0.05 * torch.randn(shp, generator=g)).to(torch.bfloat16)
                b = (a.float() + NOISE * torch.randn(shp, generator=g)).to(torch.bfloat16)
                fa.write(a.view(torch.int16).numpy().tobytes())
                fb.write(b.view(torch.int16).numpy().tobytes())
                continue
            m, n = shp
            U = torch.randn((m, RANK), generator=g) * (UPDATE / RANK ** 0.5)
            V = torch.randn((n, RANK), generator=g)
            step = max(1, BLOCK // n)
            for r0 in range(0, m, step):
                r1 = min(m, r0 + step)
                a = torch.randn((r1 - r0, n), generator=g).mul_(0.02)
                b = a + U[r0:r1] @ V.T
                b.add_(torch.randn((r1 - r0, n), generator=g), alpha=NOISE)
                fa.write(a.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
                fb.write(b.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
    return sum((out / d / "model.safetensors").stat().st_size for d in ("A", "B"))


def run_measured(argv: list[str], env: dict, timeout: float | None = None) -> tuple[float, float, int, int, str]:
    """(wall seconds, CPU seconds, peak RSS bytes, exit code, last output line) of one subprocess; killed after
    ``timeout`` seconds (exit -9, peak RSS up to then).

    Measured by /usr/bin/time around the command, not by this process's ``wait4``: Linux carries a
    process's peak RSS across fork and exec, so a child of this (torch-importing, file-writing) process
    would report at least this process's own peak."""
    t0 = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-f", "bench-memory: %e %U %S %M", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env)
    timer = threading.Timer(timeout, lambda: subprocess.run(["pkill", "-KILL", "-P", str(p.pid)])) if timeout else None
    if timer:
        timer.start()
    out = p.stdout.read().decode(errors="replace")
    code = p.wait()
    if timer:
        timer.cancel()
    lines = [l.strip() for l in out.strip().splitlines() if l.strip()]
    stats = next((l.split()[1:] for l in lines if l.startswith("bench-memory:")), None)
    lines = [l for l in lines if not l.startswith("bench-memory:") and not l.startswith("Command ")]
    last = next((l for l in lines if "error" in l.lower()), lines[-1] if lines else "")
    if code == 137:
        code, last = -9, f"killed after {timeout} s (--timeout)"
    wall, user, system, kb = (float(x) for x in stats) if stats else (time.perf_counter() - t0, 0.0, 0.0, 0.0)
    return wall, user + system, int(kb) * 1024, code, last


def full_need(shape: LlamaShape) -> int:
    """Bytes ``--spectral full`` states for the pair's largest matrix (what it refuses on)."""
    return max(full_memory_bytes(s, 2) for s in shape.tensor_shapes().values() if len(s) == 2)


def lm_head_metrics(out: Path) -> dict:
    """ΔW metrics of lm_head from tensors.csv: the planted rank-4 update should carry most of the top-16 energy."""
    f = next(out.rglob("tensors.csv"), None)
    if f is None:
        return {}
    for row in csv.DictReader(f.open()):
        if row["tensor"] == "lm_head.weight":
            return {k: row.get(k) for k in ("top16_energy", "stable_rank", "principal_overlap") if row.get(k)}
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="8b,70b,405b")
    ap.add_argument("--modes", default="off,topk,full")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/memory-bench"))
    ap.add_argument("--layer-pattern", default=None, help="scan only these tensors (all modes)")
    ap.add_argument("--threads", type=int, default=1, help="PTLENS_THREADS of the scans (a shared machine: 1)")
    ap.add_argument("--timeout", type=float, default=None, help="kill a scan after this many seconds (recorded)")
    ap.add_argument("--full-under-gb", type=float, default=4.0,
                    help="run full only when its stated need is under this (hours of exact SVDs on a few cores) "
                         "or over the memory available (the refusal is recorded)")
    ap.add_argument("--delete", action="store_true", help="delete each pair after measuring it")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per measurement")
    a = ap.parse_args()
    env = {**os.environ, "PTLENS_THREADS": str(a.threads), "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1"}
    for key in a.shapes.split(","):
        shape = SHAPES[key]
        root = a.dir / key
        if not (root / "B" / "model.safetensors").exists():
            t0 = time.perf_counter()
            size = make_pair(root, shape)
            print(f"{key}: wrote A and B ({size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", flush=True)
        size = sum((root / d / "model.safetensors").stat().st_size for d in ("A", "B"))
        for mode in a.modes.split(","):
            out = a.dir / f"{key}-{mode}-{os.getpid()}-out"  # concurrent runs of one shape and mode do not collide
            shutil.rmtree(out, ignore_errors=True)
            argv = [sys.executable, "-m", "ptlens", "weights", f"A={root / 'A'}", f"B={root / 'B'}", "--spectral", mode,
                    "--no-figures", "--output-dir", str(out)] + (["--layer-pattern", a.layer_pattern] if a.layer_pattern else [])
            need, avail = full_need(shape), available_memory()[0]
            if mode == "full" and a.full_under_gb < need / 1e9 <= avail / 1e9:
                rec = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "shape": key, "mode": mode,
                       "exit": None, "line": f"not run: fits (needs {need / 1e9:.1f} GB, {avail / 1e9:.1f} GB available) "
                                             f"but over --full-under-gb {a.full_under_gb}"}
                print(json.dumps(rec), flush=True)
                continue
            wall, cpu, rss, code, last = run_measured(argv, env, a.timeout)
            rec = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "shape": key, "mode": mode,
                   "layer_pattern": a.layer_pattern, "pair_bytes": size, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                   "peak_rss_gb": round(rss / 1e9, 2), "exit": code, "load": os.getloadavg()[0],
                   **({"lm_head": lm_head_metrics(out)} if code == 0 else {"line": last})}
            print(json.dumps(rec), flush=True)
            if a.json:
                with a.json.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
            shutil.rmtree(out, ignore_errors=True)
        if a.delete:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
