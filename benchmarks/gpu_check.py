"""The GPU paths, checked and timed in one run (for a machine with a CUDA device).

1. **Agreement**: a small planted lineage (``ptlens.synth``) scanned with ``--device cpu`` and
   ``--device cuda`` for each spectral mode; every numeric column of ``tensors.csv`` compared
   (largest relative difference per column). The CPU path is the numba kernel, the GPU path the
   torch kernel, so this cross-checks two independent implementations on the device users run.
2. **Tiny end to end**: ``ptlens run --device cuda`` on the shipped lineage, timed.
3. **Sharded scoring**: with two or more GPUs, the shipped sft checkpoint loaded by ``HFModel`` with
   ``device_map="auto"`` (``--device cuda``) scores the same responses as on ``cuda:0`` alone (log-prob and
   entropy sums, largest relative difference), and samples with per-row seeds.
4. **Speed** (unless ``--quick``): an 8B-shaped lineage written by ``make_lineage.py``, then
   ``bench_weights.py --device cuda`` (raw read, ``--spectral off``, ``--spectral topk``).

    python benchmarks/gpu_check.py --work /root/ptlens-gpu --out results/ [--quick] [--layers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ptlens(*args: str) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "ptlens", *args], capture_output=True, text=True)
    return time.perf_counter() - t0, p.returncode, (p.stdout + p.stderr)[-3000:]


def read_csv(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(path, newline="") as f:
        return {(r["tensor"], r["transition"]): r for r in csv.DictReader(f)}


def compare(a: Path, b: Path) -> dict[str, float]:
    """Largest relative difference per numeric column between two tensors.csv files."""
    ra, rb = read_csv(a), read_csv(b)
    assert ra.keys() == rb.keys(), "different rows"
    worst: dict[str, float] = {}
    for key, row in ra.items():
        for col, va in row.items():
            try:
                x, y = float(va), float(rb[key][col])
            except (TypeError, ValueError):
                continue
            if math.isnan(x) and math.isnan(y):
                continue
            d = abs(x - y) / max(abs(x), abs(y), 1e-12)
            worst[col] = max(worst.get(col, 0.0), d)
    return worst


def sharded_check() -> dict:
    """The shipped sft model sharded (device_map="auto" over every GPU) against the same model on cuda:0."""
    from ptlens.behavior.hf_model import HFModel
    from ptlens.behavior.prompts import build_prompt, load_tokenizer, model_instruction, prompt_ids
    from ptlens.behavior.sampling import SamplingSettings
    from ptlens.resolve.tiny import SHIPPED

    path = SHIPPED / "sft"
    tok = load_tokenizer(path, "sft")
    prompt = prompt_ids(tok, build_prompt(tok, "What is 12 + 7?", model_instruction(path, "auto")))
    settings = SamplingSettings(0.6, 0.95, 32)
    out: dict = {}
    with HFModel(path, tok, "cuda:0", "float32") as one:
        gens = one.generate([prompt] * 8, (), settings, list(range(8)))
        want = one.score([(prompt, g.token_ids) for g in gens])
    with HFModel(path, tok, "cuda", "float32") as sharded:
        out["device_map"] = sorted({str(v) for v in getattr(sharded.model, "hf_device_map", {}).values()})
        got = sharded.score([(prompt, g.token_ids) for g in gens])
        out["samples"] = len(sharded.generate([prompt] * 8, (), settings, list(range(8))))
    out["worst_rel_diff"] = max(abs(x.logprob_sum - y.logprob_sum) / max(abs(y.logprob_sum), 1e-12)
                                for x, y in zip(got, want))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--gpu", default="cuda", help="the device compared with cpu (cpu here checks the script itself)")
    ap.add_argument("--skip-run", action="store_true", help="leave out the tiny end-to-end run")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    import torch

    from ptlens.synth import LlamaShape, make_lineage

    report: dict = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    print(json.dumps(report), flush=True)

    # 1. agreement
    lin = make_lineage(a.work / "small", LlamaShape(hidden=256, intermediate=512, layers=2, heads=4, kv_heads=2, vocab=512))
    models = lin.model_args()
    agree = {}
    for mode in ("off", "topk", "full"):
        res = {}
        for dev, tag in (("cpu", "cpu"), (a.gpu, "gpu")):
            wall, rc, log = ptlens("weights", "--models", *models, "--spectral", mode, "--device", dev,
                                   "--no-figures", "--output-dir", str(a.work / f"small-{mode}-{tag}"))
            res[tag] = wall
            if rc:
                print(f"! weights {mode} {dev} exit {rc}\n{log}", flush=True)
        try:
            worst = compare(a.work / f"small-{mode}-cpu/weights/tensors.csv", a.work / f"small-{mode}-gpu/weights/tensors.csv")
        except Exception as e:  # noqa: BLE001 - report and go on: this is a measurement script
            worst = {"error": repr(e)}
        agree[mode] = {"wall_cpu": res["cpu"], "wall_gpu": res["gpu"],
                       "worst_rel_diff": dict(sorted(worst.items(), key=lambda kv: -kv[1] if isinstance(kv[1], float) else 0)[:12])}
        print(f"agreement {mode}: {json.dumps(agree[mode])}", flush=True)
    report["agreement"] = agree

    # 2. tiny end to end on the GPU
    if not a.skip_run:
        wall, rc, log = ptlens("run", "--device", a.gpu, "--output-dir", str(a.work / "tiny-run"))
        report["tiny_run"] = {"wall": wall, "rc": rc}
        print(f"ptlens run --device {a.gpu}: {wall:.1f} s, exit {rc}\n{log[-1500:]}", flush=True)

    # 3. transformers sharded over the visible GPUs
    if a.gpu.startswith("cuda") and torch.cuda.device_count() > 1:
        report["sharded"] = sharded_check()
        print(f"sharded scoring: {json.dumps(report['sharded'])}", flush=True)

    # 4. 8B-shaped speed
    if not a.quick:
        lin8 = a.work / f"lin8b-{a.layers}"
        if not lin8.exists():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, str(HERE / "make_lineage.py"), "--arch", "llama-3.1-8b",
                            "--layers", str(a.layers), "--out", str(lin8)], check=True)
            print(f"made {lin8} in {time.perf_counter() - t0:.0f} s", flush=True)
        subprocess.run([sys.executable, str(HERE / "bench_weights.py"), str(lin8), "--device", "cuda",
                        "--skip", "naive,modeldelta,weightscope", "--json", str(a.out / "bench_cuda.json")])
    (a.out / "gpu_check.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
