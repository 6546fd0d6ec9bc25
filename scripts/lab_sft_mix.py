"""The lab experiment behind docs/LAB.md's "Why half the SFT demonstrations give no working".

From the shipped base checkpoint: SFT on demonstrations of which a share give the bare boxed answer,
then the lab's DPO and GRPO stages with their shipped settings; after each stage, greedy and sampled
accuracy (200 in-distribution problems × 4 samples at T 0.6, top-p 0.95), the share of sampled
responses without working, and paired differences with bootstrap intervals. Checkpoints go to OUT.

    python scripts/lab_sft_mix.py OUT SHARE ['{"lr": 5e-5}'] ['{"examples": 25600, "steps": 800}']

The third argument overrides GRPO settings (steps, prompts_per_step, generations, lr, beta,
temperature, max_completion_length), the fourth SFT ones (SFTPlan fields). One thread; ~15 min.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    import datasets
    import transformers
    from transformers import set_seed

    from ptlens.behavior.problems import IN_DISTRIBUTION
    from ptlens.lab.config import DPOPlan, GRPOPlan, SFTPlan
    from ptlens.lab.data import SEED_DPO, SEED_EVAL, SEED_RL, SEED_SFT, problems, sft_targets
    from ptlens.lab.model import generate, load_model, sample_correct, save_checkpoint
    from ptlens.lab.evaluation import EVAL_TEMPERATURE, EVAL_TOP_P, SAMPLED, stage_comparisons
    from ptlens.lab.tokenizer import build_tokenizer
    from ptlens.lab.trl_stages import run_dpo, run_grpo, run_sft, sample_pairs
    from ptlens.resolve.tiny import SHIPPED

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    out, share = Path(sys.argv[1]), float(sys.argv[2])
    grpo_over = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    sp = replace(SFTPlan(), **(json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}))
    tok = build_tokenizer()
    ev = problems(200, SEED_EVAL, 0, (1, 2))  # tagged in-distribution, as the lab's eval set
    t0 = time.time()
    quiet = dict(save_at=set(), save=lambda _step: None, progress=lambda _msg: None)

    def log(*a):
        print(f"{time.time() - t0:6.0f}s", *a, flush=True)

    per_problem: dict[str, dict[str, list[int]]] = {}

    def evaluate(name, m):
        """The lab's own evaluation (greedy, and 4 samples at T 0.6 / top-p 0.95), kept for stage_comparisons."""
        per_problem[name] = {"greedy": sample_correct(m, tok, ev, 48, seed=0),
                             "sampled": sample_correct(m, tok, ev, 48, EVAL_TEMPERATURE, EVAL_TOP_P, 4, 0)}
        set_seed(1)
        texts = generate(m, tok, ev[:100], max_new_tokens=48, temperature=EVAL_TEMPERATURE, top_p=EVAL_TOP_P,
                         num_return_sequences=4)
        no_working = np.mean([t.strip().startswith("\\boxed") for ts in texts for t in ts])
        g, s = np.mean(per_problem[name]["greedy"]), np.mean(per_problem[name]["sampled"]) / 4
        return f"greedy {g:.3f} sampled {s:.3f} no working {no_working:.3f}"

    def diff(a, b):
        """Paired sampled difference b − a with the lab's estimator (``ptlens.lab.evaluation.stage_comparisons``)."""
        d = stage_comparisons(ev, per_problem, 4, 0, [(a, b)])[0][IN_DISTRIBUTION][SAMPLED]
        return f"{d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"

    def stored(m):  # what the next stage starts from: the bf16 checkpoint, upcast
        for p in m.parameters():
            p.data = p.data.to(torch.bfloat16).to(torch.float32)
        return m

    set_seed(0)
    m = load_model(SHIPPED / "base")
    probs = problems(sp.examples, SEED_SFT, 0, (1, 2))
    run_sft(m, tok, probs, steps=sp.steps, batch_size=sp.batch_size, lr=sp.learning_rate, seed=0,
            targets=sft_targets(probs, share, 0), **quiet)
    save_checkpoint(stored(m), tok, out / "sft", {}, {})
    log("sft", evaluate("sft", m))
    dp = DPOPlan()
    pairs, stats = sample_pairs(m, tok, problems(dp.prompts, SEED_DPO, 0, (1, 2)), dp.samples_per_prompt, 48, 0,
                                dp.temperature)
    run_dpo(m, tok, pairs, steps=dp.steps, batch_size=dp.batch_size, lr=dp.learning_rate, beta=dp.beta,
            loss_type=dp.loss_type, loss_weights=dp.loss_weights, seed=0, **quiet)
    save_checkpoint(stored(m), tok, out / "dpo", {}, {})
    log("dpo", stats["pairs"], "pairs;", evaluate("dpo", m), "vs sft", diff("sft", "dpo"))
    rp = GRPOPlan()
    kw = dict(steps=rp.steps, prompts_per_step=rp.prompts_per_step, generations=rp.generations, lr=rp.learning_rate,
              beta=rp.beta, temperature=rp.temperature, max_completion_length=rp.max_completion_length)
    kw.update({k: v for k, v in grpo_over.items() if k in kw})
    rl = run_grpo(m, tok, problems(rp.prompts, SEED_RL, 0, (1, 2)), seed=0, reward=rp.reward, **kw, **rp.options(),
                  **quiet)
    save_checkpoint(stored(m), tok, out / "rlvr", {}, {})
    rw = [h["reward"] for h in rl.history if "reward" in h]
    log("rlvr", evaluate("rlvr", m), "vs sft", diff("sft", "rlvr"), "vs dpo", diff("dpo", "rlvr"),
        "reward first/last 10", round(float(np.mean(rw[:10])), 3), round(float(np.mean(rw[-10:])), 3), json.dumps(kw))


if __name__ == "__main__":
    main()
