"""Behaviour sampling speed: batched sampling vs a one-prompt-at-a-time loop, and the scoring pass's cost.

    python benchmarks/bench_behavior.py                      # a tiny random chat model made on the fly
    python benchmarks/bench_behavior.py --model PATH --device cuda --problems 32 --samples 8

Both sampling modes run on the same model, problems, settings and thread count, in one process.
Prints a table and a markdown snippet for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model folder (default: a tiny random toy model)")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4, help="samples per problem")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per batched generate call")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--hidden", type=int, default=64, help="toy model width")
    ap.add_argument("--layers", type=int, default=2, help="toy model depth")
    args = ap.parse_args()

    import torch

    from ptlens.behavior.hf_model import HFModel
    from ptlens.behavior.prompts import build_prompt, load_tokenizer, prompt_ids
    from ptlens.behavior.sampling import SamplingSettings
    from ptlens.behavior.problems import builtin_problems
    from ptlens.behavior.toy import make_toy_model

    torch.set_num_threads(args.threads)
    tmp = None
    path = args.model
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = make_toy_model(Path(tmp.name) / "toy", seed=0, hidden=args.hidden, layers=args.layers)
    tok = load_tokenizer(path, path.name)
    model = HFModel(path, tok, device=args.device)
    params = sum(p.numel() for p in model.model.parameters())
    problems = builtin_problems(args.problems, seed=0)
    prompts = [build_prompt(tok, p.question) for p in problems]
    ids = [prompt_ids(tok, pr) for pr in prompts]
    stop = prompts[0].stop
    settings = SamplingSettings(temperature=0.6, top_p=0.95, max_new_tokens=args.max_new_tokens)

    rows = [ids[p] for p in range(len(problems)) for _ in range(args.samples)]
    model.generate(rows[:2], stop, settings, seed=0)  # warm-up

    t0 = time.perf_counter()
    batched = []
    for start in range(0, len(rows), args.batch_size):
        batched += model.generate(rows[start:start + args.batch_size], stop, settings, seed=start)
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    single = []
    for i, r in enumerate(rows):
        single += model.generate([r], stop, settings, seed=i)
    t_single = time.perf_counter() - t0

    t0 = time.perf_counter()
    model.score([(rows[i], g.token_ids) for i, g in enumerate(batched)])
    t_score = time.perf_counter() - t0

    tokens_b = sum(len(g.token_ids) for g in batched)
    tokens_s = sum(len(g.token_ids) for g in single)
    device = args.device if args.device != "cpu" else f"CPU ({platform.processor() or platform.machine()}, {args.threads} thread{'s' if args.threads > 1 else ''})"
    what = f"{path.name if args.model else f'toy Llama ({params:,} params, char tokenizer)'}"
    setup = (f"{len(problems)} problems × {args.samples} samples, at most {args.max_new_tokens} new tokens each, "
             f"batch {args.batch_size}, {device}, torch {torch.__version__}")
    table = [
        ("one prompt at a time (generate loop)", t_single, tokens_s / t_single, "1×"),
        (f"batched (left padding, {args.batch_size} rows/call)", t_batched, tokens_b / t_batched,
         f"{t_single / t_batched:.1f}× faster"),
        ("teacher-forced scoring pass (log-probs + entropy)", t_score, tokens_b / t_score,
         f"{t_score / t_batched:.0%} of batched"),
    ]
    print(f"model: {what}\nsetup: {setup}\n")
    print(f"{'mode':52} {'seconds':>8} {'tokens/s':>9}  relative")
    for name, t, tps, rel in table:
        print(f"{name:52} {t:8.2f} {tps:9.0f}  {rel}")
    print(f"\nbatched / single-prompt speed-up: {t_single / t_batched:.1f}×; "
          f"scoring costs {t_score / t_batched:.1%} of batched generation\n")
    print("markdown:\n")
    print(f"Model: {what}. Setup: {setup}.\n")
    print("| mode | seconds | tokens/s | relative |")
    print("|---|---:|---:|---:|")
    print(f"| one prompt at a time | {t_single:.2f} | {tokens_s / t_single:,.0f} | 1× |")
    print(f"| batched | {t_batched:.2f} | {tokens_b / t_batched:,.0f} | {t_single / t_batched:.1f}× faster |")
    print(f"| scoring pass | {t_score:.2f} | {tokens_b / t_score:,.0f} | {t_score / t_batched:.1%} of batched generation |")
    model.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
