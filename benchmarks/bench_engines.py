"""Per-sample cost of the sampling engines on this machine: ``python benchmarks/bench_engines.py [--engines hf vllm]``.

A random head_dim-32 Llama (no bias: every response runs to --max-new-tokens) answers --problems prompts
× --n samples through each engine's :meth:`Engine.generate` in one call of --batch samples at a time;
prints the engine's start-up time and samples/s, tokens/s after it. vLLM runs in its worker process
(``PTLENS_VLLM_PYTHON`` or ``.venv-vllm``), eager (no torch.compile) unless --compile.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", nargs="+", default=["hf", "vllm"])
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    import torch

    from ptlens.behavior.engines import EngineOptions, Request, make_engine
    from ptlens.behavior.prompts import build_prompt, load_tokenizer, prompt_ids
    from ptlens.behavior.sampling import SamplingSettings
    from ptlens.behavior.toy import make_toy_model

    torch.set_num_threads(2)
    path = Path(tempfile.mkdtemp(prefix="ptlens-bench-")) / "m"
    make_toy_model(path, seed=0, hidden=args.hidden, layers=args.layers, noise=1.0)
    params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(str(path)).parameters())
    tok = load_tokenizer(path, "m")
    settings = SamplingSettings(1.0, 1.0, args.max_new_tokens)
    prompts = [tuple(prompt_ids(tok, build_prompt(tok, f"What is {i} + {2 * i}?"))) for i in range(args.problems)]
    per = max(1, args.batch // args.n)
    for name in args.engines:
        extra = {"engine_kwargs": {"enforce_eager": not args.compile, "max_model_len": 1024}} if "vllm" in name else {}
        t0 = time.perf_counter()
        engine = make_engine(name, path, tok, EngineOptions(device="cpu", extra=extra))
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        tokens = samples = 0
        for i in range(0, len(prompts), per):
            reqs = [Request(p, tuple(range(j * args.n, (j + 1) * args.n)), (), settings) for j, p in enumerate(prompts[i:i + per], i)]
            for row in engine.generate(reqs):
                samples += len(row)
                tokens += sum(len(g.token_ids) for g in row)
        wall = time.perf_counter() - t0
        engine.close()
        print(json.dumps({"engine": name, "params": params, "start_s": round(start, 1), "samples": samples,
                          "tokens": tokens, "wall_s": round(wall, 2), "samples_per_s": round(samples / wall, 2),
                          "tokens_per_s": round(tokens / wall, 1), "ms_per_sample": round(1000 * wall / samples, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
