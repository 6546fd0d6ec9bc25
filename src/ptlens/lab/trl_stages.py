"""Stages 2–4 (and the controlled arms) with TRL: SFTTrainer, DPOTrainer, GRPOTrainer.

Each function trains the model it is given in place, calls ``save(step)`` at the trajectory
steps (the caller writes the checkpoint), and returns what the manifest records. TRL's
defaults aimed at GPUs are turned off here: bf16 mixed precision (the lab trains float32
master weights and stores bf16 checkpoints), gradient checkpointing, reporting to trackers,
and Trainer's own checkpoint saving.
"""

from __future__ import annotations

import copy
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ptlens.behavior.grading import grade
from ptlens.behavior.problems import Problem
from ptlens.lab.data import user_messages, worked_solution
from ptlens.lab.model import generate
from ptlens.lab.reward import REWARDS

Progress = Callable[[str], None]
_LOGGED = ("loss", "reward", "reward_std", "frac_reward_zero_std", "entropy", "learning_rate", "completions/mean_length",
           "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


@dataclass
class StageRun:
    """What a stage did: optimizer steps, tokens through the model, items seen, time, and its log."""

    steps: int
    tokens: int
    examples_seen: int
    wall_time_s: float
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Pair:
    problem: Problem
    chosen: str
    rejected: str


def _callbacks(save_at: set[int], save: Callable[[int], None], name: str, total: int, progress: Progress,
               history: list[dict]):
    from transformers import TrainerCallback

    class Trajectory(TrainerCallback):
        """Saves trajectory checkpoints and keeps the logged losses/rewards for the manifest."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in save_at:
                save(state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            keep = {k: round(float(v), 5) for k, v in (logs or {}).items() if k in _LOGGED}
            if keep:
                history.append({"step": state.global_step, **keep})
                shown = ", ".join(f"{k.replace('rewards/', 'dpo_')} {v:.3g}" for k, v in keep.items()
                                  if k != "learning_rate")
                progress(f"{name} step {state.global_step}/{total}: {shown}")

    return [Trajectory()]


def _common(plan_steps: int, batch_size: int, lr: float, seed: int, workdir: str, log_every: int) -> dict:
    return dict(
        output_dir=workdir, max_steps=plan_steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        lr_scheduler_type="cosine", warmup_steps=max(1, plan_steps // 20), weight_decay=0.0,
        seed=seed, data_seed=seed, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        report_to="none", save_strategy="no", logging_steps=log_every, disable_tqdm=True,
        dataloader_num_workers=0, max_grad_norm=1.0,
    )


def _train(trainer, model, start: float, steps: int, examples_seen: int, history: list[dict]) -> StageRun:
    """Train quietly (progress goes through the lab's own callback) and record what the stage consumed."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.train()
    model.eval()
    return StageRun(steps=steps, tokens=int(trainer.state.num_input_tokens_seen), examples_seen=examples_seen,
                    wall_time_s=round(time.perf_counter() - start, 2), history=history)


def run_sft(model, tok, problems: list[Problem], *, steps: int, batch_size: int, lr: float, seed: int,
            save_at: set[int], save: Callable[[int], None], progress: Progress, name: str = "sft",
            targets: list[str] | None = None) -> StageRun:
    """Supervised fine-tuning on question → ``targets`` (default: the worked solutions), loss on the completion only."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    targets = targets if targets is not None else [worked_solution(p) for p in problems]
    rows = [{"prompt": user_messages(p), "completion": [{"role": "assistant", "content": t}]}
            for p, t in zip(problems, targets, strict=True)]
    history: list[dict] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ptlens-lab-") as workdir:
        args = SFTConfig(**_common(steps, batch_size, lr, seed, workdir, max(1, steps // 10)),
                         max_length=256, completion_only_loss=True, packing=False,
                         include_num_input_tokens_seen="non_padding")
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             callbacks=_callbacks(save_at, save, name, steps, progress, history))
        return _train(trainer, model, start, steps, steps * batch_size, history)


def sample_pairs(model, tok, problems: list[Problem], samples_per_prompt: int, max_new_tokens: int,
                 seed: int, temperature: float, reference_fallback: bool = False) -> tuple[list[Pair], dict]:
    """Sample the model, grade with ptlens's grader, pair a correct with an incorrect answer.

    Problems whose samples are all correct or all wrong give no pair, as in on-policy
    preference data built from a verifier. With ``reference_fallback`` (the quick run, whose
    barely trained model is rarely right) an all-wrong problem pairs the worked solution
    with a wrong sample instead; the stats count those pairs.
    """
    from transformers import set_seed

    set_seed(seed)
    samples = generate(model, tok, problems, max_new_tokens=max_new_tokens, temperature=temperature,
                       num_return_sequences=samples_per_prompt)
    rng = random.Random(seed)
    pairs, n_correct, n_reference = [], 0, 0
    for p, texts in zip(problems, samples):
        good = [t for t in texts if grade(t, p.answer).correct]
        bad = [t for t in texts if t not in good]
        n_correct += len(good)
        if not good and reference_fallback:
            good, n_reference = [worked_solution(p)], n_reference + 1
        if good and bad:
            pairs.append(Pair(p, rng.choice(good), rng.choice(bad)))
    stats = {"prompts_sampled": len(problems), "samples": len(problems) * samples_per_prompt,
             "temperature": temperature,
             "sample_accuracy": round(n_correct / max(1, len(problems) * samples_per_prompt), 4),
             "pairs": len(pairs), "pairs_with_reference_chosen": n_reference}
    return pairs, stats


def run_dpo(model, tok, pairs: list[Pair], *, steps: int, batch_size: int, lr: float, beta: float, seed: int,
            save_at: set[int], save: Callable[[int], None], progress: Progress,
            loss_type: tuple[str, ...] = ("sigmoid",), loss_weights: tuple[float, ...] | None = None) -> StageRun:
    """Direct preference optimisation against a frozen copy of the starting (SFT) model."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = [{"prompt": user_messages(x.problem), "chosen": [{"role": "assistant", "content": x.chosen}],
             "rejected": [{"role": "assistant", "content": x.rejected}]} for x in pairs]
    history: list[dict] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ptlens-lab-") as workdir:
        args = DPOConfig(**_common(steps, batch_size, lr, seed, workdir, max(1, steps // 10)),
                         beta=beta, loss_type=list(loss_type),
                         loss_weights=list(loss_weights) if loss_weights else None, max_length=256,
                         include_num_input_tokens_seen="non_padding")
        trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model).eval(), args=args,
                             train_dataset=Dataset.from_list(rows), processing_class=tok,
                             callbacks=_callbacks(save_at, save, "dpo", steps, progress, history))
        return _train(trainer, model, start, steps, steps * batch_size, history)


def run_grpo(model, tok, problems: list[Problem], *, steps: int, prompts_per_step: int, generations: int,
             lr: float, beta: float, temperature: float, max_completion_length: int, seed: int,
             save_at: set[int], save: Callable[[int], None], progress: Progress, name: str = "rlvr",
             reward: str = "grader", **options) -> StageRun:
    """GRPO: ``generations`` samples per prompt, reward 1/0 from the grader, group-normalised advantages.

    ``options`` go to ``GRPOConfig`` as they are (``loss_type``, ``scale_rewards``, ``top_p`` …).
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rows = [{"prompt": user_messages(p), "answer": p.answer} for p in problems]
    history: list[dict] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ptlens-lab-") as workdir:
        args = GRPOConfig(**_common(steps, prompts_per_step * generations, lr, seed, workdir, 1),
                          num_generations=generations, max_completion_length=max_completion_length,
                          temperature=temperature, beta=beta, shuffle_dataset=True,
                          log_completions=False, **{"top_p": 1.0, **options})
        trainer = GRPOTrainer(model=model, reward_funcs=REWARDS[reward], args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=tok,
                              callbacks=_callbacks(save_at, save, name, steps, progress, history))
        return _train(trainer, model, start, steps, steps * prompts_per_step, history)
