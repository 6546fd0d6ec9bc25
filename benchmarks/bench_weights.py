"""The weight scan against the machine's read limit, the naive approach and peer tools, side by side.

Every approach runs as its own subprocess on the same lineage, one after another in one run,
with the files warmed into the page cache first; we report wall time, lineage bytes per second
(all four checkpoints' safetensors bytes ÷ wall time: the same work for every approach, all five
transitions; for ptlens also ÷ its own scan timer, without interpreter start-up and output
writing) and peak resident memory (ru_maxrss from wait4). Ratios are to the raw read and to
ptlens's element-wise scan.

    python benchmarks/bench_weights.py /tmp/lin8b-2 [--skip naive,modeldelta] [--device cuda] [--json out.json]
    python benchmarks/bench_weights.py /tmp/lin1b --labels sft,rlvr     # the seed's main case: one pair

With ``--labels`` only those checkpoints are read; ptlens gets them as its ``--models`` and each
peer runs the transitions ptlens reports (consecutive pairs, and the first checkpoint to each later
one): one pass for a pair, five for a 4-checkpoint lineage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LABELS = ["base", "sft", "dpo", "rlvr"]


def transitions(n: int) -> list[tuple[int, int]]:
    """The transitions ptlens reports for ``n`` checkpoints: consecutive ones, then the first to each later one."""
    return [(i, i + 1) for i in range(n - 1)] + [(0, j) for j in range(2, n)]


def lineage_bytes(root: Path, labels: list[str] = LABELS) -> int:
    return sum(f.stat().st_size for l in labels for f in (root / l).glob("*.safetensors"))


def run_measured(argv: list[str], env: dict | None = None) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, exit code) of one subprocess."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"  ! {' '.join(argv[:4])} … exited {code}: {err.strip().splitlines()[-1:] if err else ''}", file=sys.stderr)
    return wall, ru.ru_maxrss * 1024, code


def run_many(argvs: list[list[str]]) -> tuple[float, int, int]:
    wall, rss, code = 0.0, 0, 0
    for a in argvs:
        w, r, c = run_measured(a)
        wall += w
        rss = max(rss, r)
        code = code or c
    return wall, rss, code


RAW_READ = r"""
import sys
buf = bytearray(16 << 20)
mv = memoryview(buf)
n = 0
for path in sys.argv[1:]:
    with open(path, "rb", buffering=0) as f:
        while True:
            k = f.readinto(mv)
            if not k:
                break
            n += k
print(n)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lineage", type=Path)
    ap.add_argument("--skip", default="", help="comma-separated: naive, modeldelta, modeldelta-nosvd, weightscope, topk")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--labels", default=",".join(LABELS), help="the checkpoints to compare, in order (default: all four)")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    root = a.lineage
    labels = a.labels.split(",")
    pairs = transitions(len(labels))
    files = [str(f) for l in labels for f in sorted((root / l).glob("*.safetensors"))]
    total = lineage_bytes(root, labels)
    models = [f"{l}={root / l}" for l in labels]
    out = Path(tempfile.mkdtemp(prefix="ptlens-bench-"))
    py = sys.executable
    print(f"lineage {root}: {total / 1e9:.2f} GB in {len(files)} files; warming the page cache …", flush=True)
    run_measured([py, "-c", RAW_READ, *files])

    rows: list[tuple[str, float, int, int, str, float | None]] = []

    def add(name: str, argvs: list[list[str]], what: str, summary: Path | None = None) -> None:
        """``summary``: ptlens's summary.json, whose own timer gives the scan alone (no start-up, no writing)."""
        print(f"- {name} …", flush=True)
        wall, rss, code = run_many(argvs)
        scan = json.loads(summary.read_text())["seconds"] if summary and summary.is_file() else None
        rows.append((name, wall, rss, code, what, scan))

    add("raw read (every byte once)", [[py, "-c", RAW_READ, *files]], "read limit")
    ptl = [py, "-m", "ptlens", "weights", "--models", *models, "--device", a.device]
    # untimed: numba compiles its kernels for this checkpoint count once and caches them (a user's first run
    # pays that once; every later run, the case timed here, loads them)
    run_measured(ptl + ["--spectral", "off", "--no-figures", "--layer-pattern", r"layers\.0\.", "--output-dir", str(out / "warm")])
    n_tr = f"{len(pairs)} transition{'s' if len(pairs) > 1 else ''}"
    add("ptlens --spectral off", [ptl + ["--spectral", "off", "--output-dir", str(out / "off")]],
        f"all element-wise metrics and their nulls, {n_tr}; tables and figures", out / "off" / "weights" / "summary.json")
    add("ptlens --spectral off --no-figures", [ptl + ["--spectral", "off", "--no-figures", "--output-dir", str(out / "nofig")]],
        "the same, tables only", out / "nofig" / "weights" / "summary.json")
    ptl = ptl + ["--no-figures"]
    if "topk" not in skip:
        add("ptlens --spectral topk", [ptl + ["--spectral", "topk", "--output-dir", str(out / "topk")]],
            "+ randomized SVD of every W and ΔW (k=16)", out / "topk" / "weights" / "summary.json")
    if "naive" not in skip:
        add("naive: transformers load + eager diff", [[py, str(HERE / "naive_diff.py"), *[str(root / l) for l in labels]]],
            "‖Δ‖, rel. change, changed share; whole models")
    from peers import PEERS

    for key, peer in PEERS.items():
        if key in skip:
            continue
        if not peer.available():
            print(f"- {key}: not installed ({peer.install_hint}); skipped")
            continue
        argvs = [peer.command(root / labels[i], root / labels[j], out / f"{key}-{i}{j}") for i, j in pairs]
        add(f"{key} (pairwise × {len(pairs)})", argvs, peer.equivalent)

    base_raw = rows[0][1]
    base_ptl = rows[1][1]
    lines = ["| approach | wall (s) | GB/s | scan alone GB/s | peak RSS (GB) | × raw-read time | × ptlens-off time | computes |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, wall, rss, code, what, scan in rows:
        flag = "" if code == 0 else " (failed)"
        alone = f"{total / scan / 1e9:.2f}" if scan else "–"
        lines.append(f"| {name}{flag} | {wall:.1f} | {total / wall / 1e9:.2f} | {alone} | {rss / 1e9:.2f} | "
                     f"{wall / base_raw:.2f} | {wall / base_ptl:.2f} | {what} |")
    table = "\n".join(lines)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\n{root} — {total / 1e9:.2f} GB lineage, {machine}\n\n{table}")
    if a.json:
        a.json.write_text(json.dumps({"lineage": str(root), "bytes": total, "machine": machine,
                                      "rows": [dict(zip(("name", "wall", "rss", "code", "what", "scan_seconds"), r)) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
