"""Teacher-forced scoring with each prompt run once (shared key/value cache) vs every prompt + response in full.

    python benchmarks/bench_scoring.py                                  # shipped lineage, 60 problems × 16, 1 and 2 threads
    python benchmarks/bench_scoring.py --limit 8 --samples 4 --threads 1 --rounds 1    # a quick look
    python benchmarks/bench_scoring.py --samples-file /tmp/gens.json    # reuse (or save) the generated samples

What ``ptlens behavior`` does after sampling, on the same samples both ways in one process: every model of the
lineage (default: the shipped tiny one, 4 models) samples ``--samples`` responses per problem once (per-row
seeds, T 0.6, top-p 0.95, 512 new tokens at most, as the run), then each model scores every model's responses in
chunks of ``--batch-size`` (the run's unit) — its own keeping their nuclei, the others' with a KL against the
sampler's kept nuclei — once with ``share_prompts=False`` (the old path) and once with the default, alternating
old/new ``--rounds`` times per thread count. Checks that both paths give the same scores (max |difference|), then
prints each setting's median seconds, the speed-up and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "src" / "ptlens" / "data" / "tiny"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lineage", type=Path, default=TINY, help="folder holding the model folders (default: shipped)")
    ap.add_argument("--models", default="base,sft,dpo,rlvr")
    ap.add_argument("--limit", type=int, default=None, help="problems (builtin default: 60)")
    ap.add_argument("--samples", type=int, default=16, help="samples per problem")
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64, help="responses per score call, as ptlens behavior")
    ap.add_argument("--threads", default="1,2", help="torch CPU thread counts to time")
    ap.add_argument("--rounds", type=int, default=2, help="old/new alternations per thread count")
    ap.add_argument("--samples-file", type=Path, help="JSON of generated samples: read if present, else written")
    args = ap.parse_args()

    import torch

    from ptlens.behavior.hf_model import HFModel, KLReference
    from ptlens.behavior.prompts import build_prompt, load_tokenizer, model_instruction, prompt_ids
    from ptlens.behavior.sampling import SamplingSettings, derived_seed
    from ptlens.behavior.problems import load_problems

    names = args.models.split(",")
    problems = load_problems("builtin", args.limit, 0)
    settings = SamplingSettings(0.6, 0.95, args.max_new_tokens)
    models, prompts = {}, {}
    for name in names:
        path = args.lineage / name
        tok = load_tokenizer(path, name)
        instruction = model_instruction(path, "auto")
        prompts[name] = [prompt_ids(tok, build_prompt(tok, p.question, instruction)) for p in problems]
        models[name] = HFModel(path, tok, device="cpu")

    if args.samples_file and args.samples_file.is_file():
        responses = json.loads(args.samples_file.read_text())
        print(f"samples read from {args.samples_file}")
    else:
        torch.set_num_threads(1)
        responses, t0 = {}, time.perf_counter()
        for name in names:
            rows = [(i, s) for i in range(len(problems)) for s in range(args.samples)]
            responses[name] = []
            for start in range(0, len(rows), args.batch_size):
                chunk = rows[start:start + args.batch_size]
                gens = models[name].generate([prompts[name][i] for i, _ in chunk], (), settings,
                                             [derived_seed(0, name, i, s) for i, s in chunk])
                responses[name] += [[i, g.token_ids] for (i, _), g in zip(chunk, gens)]
        print(f"generated {sum(len(v) for v in responses.values())} responses in {time.perf_counter() - t0:.0f} s")
        if args.samples_file:
            args.samples_file.write_text(json.dumps(responses))
    tokens = {n: sum(len(r) for _, r in responses[n]) for n in names}
    prompt_tokens = {n: sum(len(prompts[n][i]) for i, _ in responses[n]) for n in names}

    def score_all(share: bool) -> list[tuple]:
        """Every scorer × every target, as the run: own samples keep nuclei, the others' KL reads them."""
        kept: dict[str, list] = {}
        out = []
        for scorer in names:  # own first, so that the nuclei exist for the others
            rows = responses[scorer]
            got = []
            for start in range(0, len(rows), args.batch_size):
                chunk = rows[start:start + args.batch_size]
                got += models[scorer].score([(prompts[scorer][i], r) for i, r in chunk], None, settings, share)
            kept[scorer] = [s.nucleus for s in got]
            out += [(s.logprob_sum, s.entropy_sum, 0.0) for s in got]
        for scorer in names:
            for target in names:
                if target == scorer:
                    continue
                rows = responses[target]
                for start in range(0, len(rows), args.batch_size):
                    chunk = rows[start:start + args.batch_size]
                    nuclei = kept[target][start:start + args.batch_size]
                    if any(n is None for n in nuclei):
                        kl = KLReference(models[target], [prompts[target][i] for i, _ in chunk], settings)
                    else:
                        kl = KLReference(None, [], settings, nuclei=nuclei)
                    got = models[scorer].score([(prompts[scorer][i], r) for i, r in chunk], kl, None, share)
                    out += [(s.logprob_sum, s.entropy_sum, s.kl_sum) for s in got]
        return out

    times: dict[tuple[int, bool], list[float]] = {}
    diff = rel = 0.0
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        score_all(True)  # warm-up
        for _ in range(args.rounds):
            for share in (False, True):
                t0 = time.perf_counter()
                res = score_all(share)
                times.setdefault((threads, share), []).append(time.perf_counter() - t0)
                print(f"{threads} thread(s), {'prompt once' if share else 'full'}: {times[(threads, share)][-1]:.1f} s",
                      flush=True)
                if share:
                    diff = max(diff, max(abs(a - b) for x, y in zip(res, old) for a, b in zip(x, y)))
                    rel = max(rel, max(abs(a - b) / max(1.0, abs(b)) for x, y in zip(res, old) for a, b in zip(x, y)))
                else:
                    old = res
    n_resp = sum(len(v) for v in responses.values())
    scored = len(names) * n_resp
    print(f"\nlineage: {args.lineage} ({', '.join(names)}); {len(problems)} problems × {args.samples} samples; "
          f"{n_resp} responses, each scored by {len(names)} models ({scored} scorings); "
          f"prompt share of scored tokens {sum(prompt_tokens.values()) / (sum(prompt_tokens.values()) + sum(tokens.values())):.0%}; "
          f"max |new − old| over log-prob / entropy / KL sums: {diff:.2e} "
          f"(relative to max(1, |old|): {rel:.2e})")
    cpu = platform.processor() or platform.machine()
    print(f"CPU {cpu}, torch {torch.__version__}, chunks of {args.batch_size} responses, {args.rounds} rounds\n")
    print("| threads | full prompt + response (s) | prompt once (s) | speed-up |")
    print("|---:|---:|---:|---:|")
    for threads in sorted({t for t, _ in times}):
        a, b = statistics.median(times[(threads, False)]), statistics.median(times[(threads, True)])
        print(f"| {threads} | {a:.1f} | {b:.1f} | {a / b:.2f}× |")
    print("\nall rounds (s):", {f"{t} thr {'new' if s else 'old'}": [round(x, 1) for x in v] for (t, s), v in times.items()})
    for m in models.values():
        m.close()


if __name__ == "__main__":
    main()
