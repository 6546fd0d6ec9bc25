"""ptlens's overhead over vLLM: the same requests drawn by a plain vLLM script and by ``ptlens behavior --engine vllm``.

For each model of the lineage (default: the shipped one), the plain script builds one ``vllm.LLM`` with the
engine keywords ptlens uses and calls ``llm.generate`` on every sample's request (ptlens's prompts and
per-sample seeds, ``n=1``) — timed around ``generate`` only. ptlens then runs ``run_behavior`` with
``--engine vllm`` on the same problems, and the time goes to phases measured inside the run: engine start,
sampling (``VllmEngine.generate``: the worker's ``llm.generate`` plus the channel), grading, journal writes,
scoring (``VllmEngine.score``) and the rest (metrics, results). Both draw the same tokens (checked).

    PTLENS_VLLM_PYTHON=.venv-vllm/bin/python PYTHONPATH=src python benchmarks/bench_vllm_overhead.py \\
        --limit 24 --n-samples 8 --max-new-tokens 96 --json /tmp/overhead.json

Sampling throughput ratio = plain samples/s ÷ ptlens samples/s over the sampling phase (target: within 15%).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

PLAIN = r"""
import json, sys, time
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
job = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
llm = LLM(model=job["model"], **job["engine_kwargs"])
start = time.perf_counter() - t0
prompts = [TokensPrompt(prompt_token_ids=r["prompt_ids"]) for r in job["requests"]]
params = [SamplingParams(n=1, temperature=r["temperature"], top_p=r["top_p"], top_k=0, max_tokens=r["max_tokens"],
                         seed=r["seed"], stop=r["stop"] or None) for r in job["requests"]]
t0 = time.perf_counter()
outs = llm.generate(prompts, params, use_tqdm=False)
wall = time.perf_counter() - t0
json.dump({"start": start, "generate": wall, "tokens": [list(o.outputs[0].token_ids) for o in outs]},
          open(sys.argv[2], "w"))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None, help="name=path (default: the shipped sft and rlvr)")
    ap.add_argument("--problems", default="builtin:1,2")
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--n-samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    sys.path.insert(0, str(SRC))
    import ptlens.behavior.engine_vllm as EV
    import ptlens.behavior.run as R
    import ptlens.behavior.generate as S
    from ptlens.behavior.config import BehaviorConfig
    from ptlens.results.journal import Journal
    from ptlens.results.store import load_samples
    from ptlens.behavior.engines import EngineOptions
    from ptlens.behavior.prompts import build_prompt, load_tokenizer, model_instruction, prompt_ids
    from ptlens.behavior.problems import load_problems
    from ptlens.resolve import resolve_lineage
    from ptlens.resolve.tiny import SHIPPED

    python = EV.vllm_python()
    if python is None:
        sys.exit("no Python with vLLM: set PTLENS_VLLM_PYTHON")
    specs = a.models or [f"sft={SHIPPED / 'sft'}", f"rlvr={SHIPPED / 'rlvr'}"]
    lineage = resolve_lineage(models=specs)
    extra = {"engine_kwargs": {"enforce_eager": True, "max_model_len": 256}}
    cfg = BehaviorConfig(problems=a.problems, limit=a.limit, n_samples=a.n_samples, max_new_tokens=a.max_new_tokens,
                           engine="vllm", device=a.device, batch_size=a.batch_size, engine_options=extra,
                           figures=False, n_boot=200)
    problems = load_problems(cfg.problems, cfg.limit, cfg.seed)
    report: dict = {"settings": {k: getattr(a, k) for k in ("problems", "limit", "n_samples", "max_new_tokens",
                                                           "batch_size", "device")}, "plain": {}, "ptlens": {}}
    work = Path(tempfile.mkdtemp(prefix="ptlens-overhead-"))
    plain_tokens = {}
    for cp in lineage.checkpoints:  # the plain vLLM script, one model at a time
        tok = load_tokenizer(cp.path, cp.name)
        instr = model_instruction(cp.path, cfg.instruction)
        prompts = [build_prompt(tok, p.question, instr) for p in problems]
        reqs = [{"prompt_ids": prompt_ids(tok, prompts[i]), "seed": S.sample_seed(cfg.seed, cp.name, p.id, s),
                 "temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_new_tokens,
                 "stop": list(prompts[i].stop)} for i, p in enumerate(problems) for s in range(cfg.n_samples)]
        kw = EV.engine_kwargs(Path(cp.path), EngineOptions(device=a.device, extra=extra), a.device)
        job, res = work / f"{cp.name}.json", work / f"{cp.name}-out.json"
        job.write_text(json.dumps({"model": str(cp.path), "engine_kwargs": kw, "requests": reqs}))
        env = {**os.environ, **{k: v for k, v in EV._worker_env(a.device).items() if k.startswith("VLLM_")}}
        proc = subprocess.run([python, "-c", PLAIN, str(job), str(res)], env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"plain vLLM script failed: {proc.stderr[-2000:]}")
        out = json.loads(res.read_text())
        n_tok = sum(len(t) for t in out["tokens"])
        plain_tokens[cp.name] = out["tokens"]
        report["plain"][cp.name] = {"start_s": round(out["start"], 2), "generate_s": round(out["generate"], 2),
                                    "samples": len(reqs), "tokens": n_tok,
                                    "samples_per_s": round(len(reqs) / out["generate"], 2)}
        print(f"plain vLLM {cp.name}: {json.dumps(report['plain'][cp.name])}", flush=True)

    phases: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*args, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                phases[name] += time.perf_counter() - t0
        return wrapper

    EV.VllmEngine.__init__ = timed("engine start", EV.VllmEngine.__init__)
    EV.VllmEngine.generate = timed("sampling", EV.VllmEngine.generate)
    EV.VllmEngine.score = timed("scoring", EV.VllmEngine.score)
    EV.VllmEngine.close = timed("engine stop", EV.VllmEngine.close)
    S.grade = timed("grading", S.grade)
    Journal.append = timed("journal writes", Journal.append)
    R.write_samples = timed("writing samples", R.write_samples)
    t0 = time.perf_counter()
    res = R.run_behavior(lineage, cfg, work / "run", progress=False)
    total = time.perf_counter() - t0
    phases["other (plan, merge, metrics, results)"] = total - sum(phases.values())
    samples = load_samples(work / "run")
    same = all([s.token_ids for s in samples if s.model == name] == plain_tokens[name] for name in plain_tokens)
    n = len(samples)
    plain_rate = sum(p["samples"] for p in report["plain"].values()) / sum(p["generate_s"] for p in report["plain"].values())
    ours = n / phases["sampling"]
    report["ptlens"] = {"total_s": round(total, 2), "phases_s": {k: round(v, 2) for k, v in phases.items()},
                        "samples": n, "sampling_samples_per_s": round(ours, 2), "same_tokens_as_plain": same,
                        "scoring": res.results["settings"]["scoring"]}
    report["sampling_throughput_ratio"] = round(ours / plain_rate, 3)
    print(json.dumps(report, indent=2))
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
