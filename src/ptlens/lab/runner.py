"""``run_lab``: base → SFT → DPO → RLVR (and the controlled arms), checkpoints and manifest.

Layout of the output folder::

    lineage.json                 the lineage (final checkpoint of each stage) + trajectory + run facts
    base/ sft/ dpo/ rlvr/        final checkpoints
    sft-step0150/ …              trajectory checkpoints (stage label + optimizer step)
    controlled/lineage.json      with --controlled: sft (start) → sft-more and → grpo, same prompts
    controlled/sft-more/ controlled/grpo/ …

Every checkpoint folder loads with ``from_pretrained`` and carries ``ptlens_stage.json``.

Precision, as in a real pipeline: each stage trains float32 master weights, saves its checkpoints
in bfloat16 (``LabConfig.storage_dtype``), and the next stage starts from the *stored* checkpoint
(upcast to float32), the way a released checkpoint is loaded. Each stage is evaluated on its
stored checkpoint, the weights ``ptlens run`` analyses.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ptlens.errors import PtlensError
from ptlens.io import write_json
from ptlens.lab.config import LabConfig
from ptlens.behavior.problems import HELD_OUT, IN_DISTRIBUTION
from ptlens.lab.data import (SEED_DPO, SEED_EVAL, SEED_PRETRAIN, SEED_RL, SEED_SFT, answer_only, pretrain_corpus,
                             problems, sft_targets)

log = logging.getLogger("ptlens.lab")

MANIFEST_VERSION = 2
EVAL_TEMPERATURE, EVAL_TOP_P = 0.6, 0.95
SAMPLED = f"t{EVAL_TEMPERATURE:g}"
LAB_DEPS = ("trl", "datasets", "accelerate")
INSTALL_HINT = "pip install 'ptlens[lab]'"


def require_lab_deps() -> None:
    """Fail with one line naming the missing packages and the install command."""
    import importlib.util

    missing = [m for m in LAB_DEPS if importlib.util.find_spec(m) is None]
    if missing:
        raise PtlensError(f"ptlens lab needs {', '.join(missing)} (the 'lab' extra): {INSTALL_HINT}")


@dataclass
class _Saved:
    label: str
    step: int
    path: Path
    facts: dict
    seen: dict
    final: bool
    size_bytes: int


@dataclass
class _Run:
    """Bookkeeping shared by the stages of one run: where checkpoints go and what was saved."""

    root: Path
    tok: object
    config: LabConfig
    progress: Callable[[str], None]
    saved: list[_Saved] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    per_problem: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def save(self, model, label: str, step: int, facts: dict, seen: dict, final: bool) -> _Saved:
        """One checkpoint: ``facts`` are StageFacts fields as of ``step``; ``seen`` counts items and tokens."""
        from ptlens.lab.model import save_checkpoint

        folder = self.root / (label if final else f"{label}-step{step:04d}")
        extra = {"label": label, "step": step, "final": final, "instruction": "",
                 "dtype": self.config.storage_dtype, **seen}
        size = save_checkpoint(model, self.tok, folder, facts, extra, dtype=self.config.storage_dtype)
        entry = _Saved(label, step, folder, facts, seen, final, size)
        self.saved.append(entry)
        self.progress(f"saved {folder}")
        return entry

    def warn(self, stage: str, message: str | None) -> None:
        """Log a degenerate-signal warning and keep it for lineage.json."""
        if message:
            log.warning(message)
            self.progress(f"WARNING {message}")
            self.warnings.append({"stage": stage, "message": message})

    def evaluate(self, model, eval_set, name: str | None = None) -> dict[str, dict[str, float]]:
        """Greedy accuracy and sampled accuracy (``eval_samples`` per problem at ``ptlens run``'s default
        temperature and top-p), per level and per in-distribution / held-out; per-problem counts kept under ``name``."""
        from ptlens.lab.model import accuracy_by_tag, sample_correct

        n, k = self.config.max_new_tokens, self.config.eval_samples
        greedy = sample_correct(model, self.tok, eval_set, n, seed=self.config.seed)
        sampled = sample_correct(model, self.tok, eval_set, n, EVAL_TEMPERATURE, EVAL_TOP_P, k, self.config.seed)
        if name:
            self.per_problem[name] = {"greedy": greedy, "sampled": sampled}
        return {"greedy": accuracy_by_tag(eval_set, greedy, 1), SAMPLED: accuracy_by_tag(eval_set, sampled, k)}


def _save_steps(total: int, count: int) -> set[int]:
    """The trajectory: ``count - 1`` evenly spaced intermediate steps (the final one is saved apart)."""
    return {round(total * i / count) for i in range(1, count)} - {0, total}


def clear_previous(root: Path) -> None:
    """Remove the checkpoints a previous run listed in ``root``'s manifests, so no stale trajectory stays.

    Only folders named in a manifest and holding ``ptlens_stage.json`` are removed.
    """
    import shutil

    for manifest in (root / "controlled" / "lineage.json", root / "lineage.json"):
        if not manifest.is_file():
            continue
        try:
            listed = [t["path"] for t in json.loads(manifest.read_text()).get("trajectory", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise PtlensError(f"{manifest}: not a lab manifest; choose another --output-dir") from None
        for rel in listed:
            folder = (manifest.parent / rel).resolve()
            if folder.parent == manifest.parent.resolve() and (folder / "ptlens_stage.json").is_file():
                shutil.rmtree(folder)
        manifest.unlink()


def _source(config: LabConfig) -> str:
    from ptlens.version import __version__

    return f"ptlens {__version__} lab, seed {config.seed}{' (quick)' if config.quick else ''}"


def _stage_entry(saved: _Saved, root: Path, extra: dict) -> dict:
    return {"label": saved.label, "path": os.path.relpath(saved.path, root), "facts": saved.facts, **saved.seen,
            **extra}


def _trajectory(saved: list[_Saved], root: Path) -> list[dict]:
    return [{"label": s.label, "step": s.step, "final": s.final, "path": os.path.relpath(s.path, root),
             "facts": s.facts, **s.seen, "size_bytes": s.size_bytes} for s in saved]


def _setup(config: LabConfig) -> None:
    """Process-wide settings of a lab run: torch's thread count, the global seed, and quiet libraries.

    The libraries' own progress bars and logs are silenced because the run reports through
    ``progress``; results are bitwise reproducible for a given seed and thread count.
    """
    import datasets
    import torch
    import transformers
    from transformers import set_seed

    torch.set_num_threads(config.threads)
    set_seed(config.seed)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def run_lab(config: LabConfig, progress: Callable[[str], None] = lambda _msg: None) -> Path:
    """Train the tiny lineage described by ``config``; returns the path of ``lineage.json``."""
    require_lab_deps()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl)\.")
        _setup(config)
        manifest = _run_lineage(config, progress)
        if config.controlled:
            _run_controlled(config, manifest.parent / "sft", progress)
    return manifest


def _run_lineage(config: LabConfig, progress: Callable[[str], None]) -> Path:
    from ptlens.lab.checks import dpo_pairs_warning, grpo_reward_warning, stored_change_warning
    from ptlens.lab.model import load_model, new_model
    from ptlens.lab.pretrain import pack, pretrain
    from ptlens.lab.tokenizer import build_tokenizer
    from ptlens.lab.trl_stages import run_dpo, run_grpo, run_sft, sample_pairs

    root = config.output_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    clear_previous(root)
    tok = build_tokenizer()
    run = _Run(root=root, tok=tok, config=config, progress=progress)
    seed, levels, source = config.seed, config.levels, _source(config)
    eval_set = eval_problems(config)
    stages: list[dict] = []
    t_run = time.perf_counter()

    def reload(saved: _Saved, start: _Saved | None, label: str):
        """The stored checkpoint as the next stage's start (float32 master weights from the stored dtype)."""
        model = load_model(saved.path)
        if start is not None:
            share = stored_changed_share(start.path, saved.path)
            run.warn(label, stored_change_warning(label, share))
            return model, share
        return model, None

    # 1. base: a plain torch loop (see pretrain.py for why)
    bp = config.pretrain
    progress(f"base: building {bp.documents:,} pretraining documents")
    t0 = time.perf_counter()
    corpus = pretrain_corpus(bp.documents, seed, levels, bp.problem_share)
    blocks = pack(tok, corpus.documents, bp.seq_len)
    model = new_model(config.model, tok, seed)
    n_params = sum(p.numel() for p in model.parameters())
    base_facts = {"algorithm": "pretraining (next-token, from random init)", "learning_rate": bp.learning_rate,
                  "notes": f"{len(corpus.documents):,} raw-text documents ({corpus.problems_used:,} word problems "
                           f"with plain-text solutions, the rest lists of arithmetic facts) packed into "
                           f"{len(blocks):,} blocks of {bp.seq_len} tokens", "source": source}
    base_mid, every = _save_steps(bp.steps, bp.checkpoints), max(1, bp.steps // 10)

    def on_pretrain_step(step: int, loss: float) -> None:
        if step % every == 0:
            progress(f"base step {step}/{bp.steps}: loss {loss:.3f}")
        if step in base_mid:
            run.save(model, "base", step, base_facts, {"tokens": step * bp.batch_size * bp.seq_len}, False)

    tokens = pretrain(model, blocks, bp, seed, on_pretrain_step)
    wall = round(time.perf_counter() - t0, 2)
    final = run.save(model, "base", bp.steps, base_facts, {"tokens": tokens}, True)
    model, _ = reload(final, None, "base")
    acc = run.evaluate(model, eval_set, "base")
    progress(f"base: accuracy {acc}")
    stages.append(_stage_entry(final, root, {
        "steps": bp.steps, "batch_size": bp.batch_size, "learning_rate": bp.learning_rate,
        "documents": len(corpus.documents), "wall_time_s": wall, "seed": seed, "accuracy": acc,
        "trainer": "torch loop (AdamW, warmup + cosine)"}))
    prev = final

    # 2. sft
    sp = config.sft
    sft_problems = problems(sp.examples, SEED_SFT, seed, levels)
    sft_texts = sft_targets(sft_problems, sp.answer_only_share, seed)
    terse = sum(t == answer_only(p) for p, t in zip(sft_problems, sft_texts))

    def sft_facts(step: int) -> dict:
        return {"algorithm": "SFT (TRL SFTTrainer, loss on completion)",
                "examples": min(len(sft_problems), step * sp.batch_size),
                "epochs": round(step * sp.batch_size / len(sft_problems), 3), "learning_rate": sp.learning_rate,
                "notes": f"question -> worked equations -> \\boxed{{answer}}, in the chat template; {terse:,} of the "
                         f"{len(sft_texts):,} demonstrations ({terse / max(1, len(sft_texts)):.0%}) are the bare boxed "
                         f"answer without the working", "source": source}

    sft_run = run_sft(model, tok, sft_problems, steps=sp.steps, batch_size=sp.batch_size, lr=sp.learning_rate,
                      seed=seed, targets=sft_texts, save_at=_save_steps(sp.steps, sp.checkpoints), progress=progress,
                      save=lambda step: run.save(model, "sft", step, sft_facts(step),
                                                 {"examples_seen": step * sp.batch_size}, False))
    final = run.save(model, "sft", sp.steps, sft_facts(sp.steps),
                     {"examples_seen": sft_run.examples_seen, "tokens": sft_run.tokens}, True)
    model, changed = reload(final, prev, "sft")
    acc = run.evaluate(model, eval_set, "sft")
    progress(f"sft: accuracy {acc}")
    stages.append(_stage_entry(final, root, {
        "steps": sp.steps, "batch_size": sp.batch_size, "learning_rate": sp.learning_rate,
        "wall_time_s": sft_run.wall_time_s, "seed": seed, "accuracy": acc, "stored_entries_changed": changed,
        "answer_only_demonstrations": terse,
        "trainer": "trl.SFTTrainer", "history": sft_run.history}))
    prev = final

    # 3. dpo
    dp = config.dpo
    t0 = time.perf_counter()
    progress(f"dpo: sampling {dp.samples_per_prompt} answers to each of {dp.prompts} prompts from the SFT model")
    pairs, pair_stats = sample_pairs(model, tok, problems(dp.prompts, SEED_DPO, seed, levels), dp.samples_per_prompt,
                                     config.max_new_tokens, seed, dp.temperature, dp.reference_fallback)
    sample_wall = round(time.perf_counter() - t0, 2)
    progress(f"dpo: {pair_stats}")
    run.warn("dpo", dpo_pairs_warning(pair_stats, dp.batch_size))
    dpo_steps = dp.steps if pairs else 0

    def dpo_facts(step: int) -> dict:
        loss = " + ".join(f"{w:g} x {t}" for t, w in zip(dp.loss_type, dp.loss_weights))
        return {"algorithm": f"DPO (TRL DPOTrainer, loss {loss}, beta {dp.beta})",
                "pairs": min(len(pairs), step * dp.batch_size),
                "epochs": round(step * dp.batch_size / max(1, len(pairs)), 3), "learning_rate": dp.learning_rate,
                "notes": f"on-policy pairs: a correct and an incorrect sample (temperature {dp.temperature}) of the "
                         f"SFT model, graded by ptlens's grader ({pair_stats['prompts_sampled']} prompts x "
                         f"{dp.samples_per_prompt} samples, sample accuracy {pair_stats['sample_accuracy']})"
                         + (f"; {pair_stats['pairs_with_reference_chosen']} pairs use the worked solution as chosen"
                            if pair_stats["pairs_with_reference_chosen"] else "")
                         + ("" if pairs else "; no pairs, so no DPO step: dpo = sft"),
                "source": source}

    if pairs:
        dpo_run = run_dpo(model, tok, pairs, steps=dp.steps, batch_size=dp.batch_size, lr=dp.learning_rate,
                          beta=dp.beta, loss_type=dp.loss_type, loss_weights=dp.loss_weights, seed=seed,
                          save_at=_save_steps(dp.steps, dp.checkpoints), progress=progress,
                          save=lambda step: run.save(model, "dpo", step, dpo_facts(step),
                                                     {"examples_seen": step * dp.batch_size}, False))
    else:
        from ptlens.lab.trl_stages import StageRun

        dpo_run = StageRun(steps=0, tokens=0, examples_seen=0, wall_time_s=0.0)
    final = run.save(model, "dpo", dpo_steps, dpo_facts(dpo_steps),
                     {"examples_seen": dpo_run.examples_seen, "tokens": dpo_run.tokens}, True)
    model, changed = reload(final, prev, "dpo") if pairs else (load_model(final.path), 0.0)
    acc = run.evaluate(model, eval_set, "dpo")
    progress(f"dpo: accuracy {acc}")
    stages.append(_stage_entry(final, root, {
        "steps": dpo_steps, "batch_size": dp.batch_size, "learning_rate": dp.learning_rate,
        "wall_time_s": round(dpo_run.wall_time_s + sample_wall, 2), "sampling_wall_time_s": sample_wall,
        "seed": seed, "accuracy": acc, "stored_entries_changed": changed, "pair_sampling": pair_stats,
        "trainer": "trl.DPOTrainer", "history": dpo_run.history}))
    prev = final

    # 4. rlvr
    rp = config.rlvr
    rl_problems = problems(rp.prompts, SEED_RL, seed, levels)
    n_saved = len(run.saved)
    rl_run = run_grpo(model, tok, rl_problems, steps=rp.steps, prompts_per_step=rp.prompts_per_step,
                      generations=rp.generations, lr=rp.learning_rate, beta=rp.beta, temperature=rp.temperature,
                      max_completion_length=rp.max_completion_length, seed=seed, reward=rp.reward,
                      save_at=_save_steps(rp.steps, rp.checkpoints), progress=progress,
                      save=lambda step: run.save(model, "rlvr", step, _grpo_facts(rp, len(rl_problems), step, source),
                                                 {"examples_seen": step * rp.prompts_per_step}, False),
                      **rp.options())
    run.warn("rlvr", grpo_reward_warning(rl_run.history))
    final = run.save(model, "rlvr", rp.steps, _grpo_facts(rp, len(rl_problems), rp.steps, source),
                     {"examples_seen": rl_run.examples_seen, "tokens": rl_run.tokens}, True)
    model, changed = reload(final, prev, "rlvr")
    acc = run.evaluate(model, eval_set, "rlvr")
    progress(f"rlvr: accuracy {acc}")
    curve = [{"step": 0, "checkpoint": prev.path.name, **_in_distribution(stages[-1]["accuracy"])}]
    for s in run.saved[n_saved:-1]:  # intermediate GRPO checkpoints, read back as stored
        curve.append({"step": s.step, "checkpoint": s.path.name,
                      **_in_distribution(run.evaluate(load_model(s.path), eval_set))})
    curve.append({"step": rp.steps, "checkpoint": final.path.name, **_in_distribution(acc)})
    progress(f"rlvr: in-distribution accuracy along GRPO {curve}")
    stages.append(_stage_entry(final, root, {
        "steps": rp.steps, "batch_size": rp.prompts_per_step * rp.generations, "learning_rate": rp.learning_rate,
        "wall_time_s": rl_run.wall_time_s, "seed": seed, "accuracy": acc, "stored_entries_changed": changed,
        "trainer": "trl.GRPOTrainer", "grpo_config": rp.options(), "accuracy_curve": curve,
        "history": rl_run.history}))

    comparisons = stage_comparisons(eval_set, run.per_problem, config.eval_samples, seed,
                                    [("base", "sft"), ("sft", "dpo"), ("dpo", "rlvr"), ("sft", "rlvr")])
    for c in comparisons:
        if c["pair"] == "rlvr - sft":
            d = c["in-distribution"][SAMPLED]
            progress(f"rlvr - sft, sampled in-distribution accuracy: {d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
    manifest = root / "lineage.json"
    write_json(manifest, {
        "manifest_version": MANIFEST_VERSION,
        "description": f"tiny lab lineage: a {n_params / 1e6:.2f}M-parameter Llama with a character tokenizer, "
                       f"trained from scratch on CPU on builtin arithmetic problems (levels "
                       f"{', '.join(map(str, levels))}): base -> SFT -> DPO -> RLVR (GRPO)",
        "stages": stages,
        "trajectory": _trajectory(run.saved, root),
        "warnings": run.warnings,
        "seed": seed,
        "quick": config.quick,
        "parameters": n_params,
        "model": {**config.model.to_dict(), "head_dim": config.model.head_dim},
        "precision": {"training": "float32 master weights (AdamW state float32)",
                      "stored": config.storage_dtype,
                      "stage_start": f"each stage starts from the previous stage's stored {config.storage_dtype} "
                                     "checkpoint, upcast to float32 (as a released checkpoint is loaded)",
                      "evaluated": "each stage's stored checkpoint"},
        "levels": list(levels),
        "held_out_levels": list(config.held_out_levels),
        "prompt_format": "chat template; the user turn is the bare question (no instruction, hence "
                         "\"instruction\": \"\" in ptlens_stage.json); answers end in \\boxed{N}",
        "eval": {"problems": config.eval_problems, "held_out_problems": config.held_out_problems,
                 "generator_seed": SEED_EVAL + seed, "max_new_tokens": config.max_new_tokens,
                 "decoding": {"greedy": "argmax", SAMPLED: f"{config.eval_samples} samples per problem, temperature "
                              f"{EVAL_TEMPERATURE}, top-p {EVAL_TOP_P}"},
                 "tags": "accuracy per level, and per in-distribution (the training levels) / held-out (never "
                         "trained on)"},
        "comparisons": comparisons,
        "problem_seeds": {"pretrain": SEED_PRETRAIN + seed, "sft": SEED_SFT + seed, "dpo": SEED_DPO + seed,
                          "rlvr": SEED_RL + seed, "eval": SEED_EVAL + seed},
        "wall_time_s": round(time.perf_counter() - t_run, 2),
        "threads": config.threads,
        "size_bytes": sum(s.size_bytes for s in run.saved),
        "environment": _environment(),
        "config": config.to_dict(),
    })
    progress(f"wrote {manifest}")
    return manifest


def _in_distribution(acc: dict) -> dict:
    return {k: v.get(IN_DISTRIBUTION) for k, v in acc.items()}


def eval_problems(config: LabConfig) -> list:
    """The lab's evaluation set: ``eval_problems`` of the training levels, then ``held_out_problems`` of the
    held-out levels, tagged ``in-distribution`` / ``held-out`` (and by level)."""
    held = problems(config.held_out_problems, SEED_EVAL, config.seed, config.held_out_levels, kind=HELD_OUT) \
        if config.held_out_levels and config.held_out_problems else []
    return problems(config.eval_problems, SEED_EVAL, config.seed, config.levels) + held


def stored_changed_share(a: Path, b: Path) -> float:
    """Share of stored entries whose bits differ between two checkpoints (ptlens's ``changed_exact``, model-wide)."""
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    changed = sum(int((wa[k].view(-1) != wb[k].view(-1)).sum()) for k in wa)
    return round(changed / sum(t.numel() for t in wa.values()), 6)


def stage_comparisons(eval_set: list, per_problem: dict[str, dict[str, list[int]]], samples: int, seed: int,
                      pairs: list[tuple[str, str]], n_boot: int = 1000) -> list[dict]:
    """Paired differences B − A of greedy and sampled accuracy on the lab's eval set, per in-distribution / held-out.

    Intervals: 95% percentile bootstrap over problems, the same resamples for both stages
    (ptlens's behaviour estimators), as ``ptlens run`` reports its paired differences.
    """
    import numpy as np

    from ptlens.stats.bootstrap import paired_difference, resample_weights
    from ptlens.stats.statistic import Statistic

    out = []
    for a, b in pairs:
        if a not in per_problem or b not in per_problem:
            continue
        entry: dict = {"pair": f"{b} - {a}"}
        for kind in (IN_DISTRIBUTION, HELD_OUT):
            idx = [i for i, p in enumerate(eval_set) if kind in p.tags]
            if not idx:
                continue
            weights = resample_weights(len(idx), n_boot, seed)
            entry[kind] = {"problems": len(idx)}
            for decoding, k in (("greedy", 1), (SAMPLED, samples)):
                sa, sb = (Statistic(np.array([per_problem[m][("greedy" if k == 1 and decoding == "greedy" else "sampled")][i]
                                              for i in idx], dtype=float), np.full(len(idx), float(k)))
                          for m in (a, b))
                entry[kind][decoding] = {key: (round(v, 4) if isinstance(v, float) else v)
                                         for key, v in paired_difference(sb, sa, weights).to_dict().items()}
        out.append(entry)
    return out


def _grpo_facts(rp, n_prompts: int, step: int, source: str, notes: str = "") -> dict:
    return {"algorithm": "GRPO with verifiable rewards (TRL GRPOTrainer)",
            "prompts": min(n_prompts, step * rp.prompts_per_step),
            "episodes": step * rp.prompts_per_step * rp.generations, "learning_rate": rp.learning_rate,
            "notes": ("reward 1 if ptlens's grader marks the answer correct, else 0" if rp.reward == "grader" else
                      "reward 1 if the response's last number equals the gold answer, else 0 (lenient, --quick)")
                     + f"; {rp.generations} samples per "
                     f"prompt at temperature {rp.temperature}, KL beta {rp.beta}" + (f"; {notes}" if notes else ""),
            "source": source}


def run_controlled(config: LabConfig, start: Path, progress: Callable[[str], None] = lambda _msg: None) -> Path:
    """From one SFT checkpoint: more SFT, and separately GRPO, on the same prompts and number of examples.

    Both arms see the same ``arms.prompts`` prompts for ``arms.examples`` prompt presentations:
    SFT with the worked solution as target, GRPO with ``rlvr.generations`` samples each.
    Returns the path of ``controlled/lineage.json`` under ``config.output_dir``.
    """
    require_lab_deps()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl)\.")
        _setup(config)
        return _run_controlled(config, Path(start), progress)


def _run_controlled(config: LabConfig, start: Path, progress: Callable[[str], None]) -> Path:
    from ptlens.lab.checks import grpo_reward_warning
    from ptlens.lab.model import load_model
    from ptlens.lab.tokenizer import build_tokenizer
    from ptlens.lab.trl_stages import run_grpo, run_sft

    ap, seed = config.arms, config.seed
    root = config.output_dir.resolve() / "controlled"
    root.mkdir(parents=True, exist_ok=True)
    clear_previous(root)
    tok = build_tokenizer()
    run = _Run(root=root, tok=tok, config=config, progress=progress)
    prompts = problems(ap.prompts, SEED_RL, seed, config.levels)
    eval_set = eval_problems(config)
    source = _source(config) + ", controlled arms"
    shared = f"same {len(prompts)} prompts and {ap.examples} examples in both arms, from {os.path.relpath(start, root)}"
    start_info = json.loads((start / "ptlens_stage.json").read_text())
    stages: list[dict] = [{"label": "sft", "path": os.path.relpath(start, root), "facts": start_info["facts"],
                           "step": start_info.get("step"), "accuracy": run.evaluate(load_model(start), eval_set, "sft"),
                           "role": "start"}]

    steps = max(1, ap.examples // ap.sft_batch_size)
    model = load_model(start)

    def arm_sft_facts(step: int) -> dict:
        return {"algorithm": "SFT (TRL SFTTrainer, loss on completion)",
                "examples": min(len(prompts), step * ap.sft_batch_size),
                "epochs": round(step * ap.sft_batch_size / len(prompts), 3), "learning_rate": ap.sft_learning_rate,
                "notes": shared, "source": source}

    # more of the same SFT: demonstrations drawn like the main SFT's, answer-only share included
    arm = run_sft(model, tok, prompts, steps=steps, batch_size=ap.sft_batch_size, lr=ap.sft_learning_rate, seed=seed,
                  targets=sft_targets(prompts, config.sft.answer_only_share, seed),
                  save_at=_save_steps(steps, ap.checkpoints), progress=progress, name="sft-more",
                  save=lambda step: run.save(model, "sft-more", step, arm_sft_facts(step),
                                             {"examples_seen": step * ap.sft_batch_size}, False))
    final = run.save(model, "sft-more", steps, arm_sft_facts(steps),
                     {"examples_seen": arm.examples_seen, "tokens": arm.tokens}, True)
    stages.append(_stage_entry(final, root, {
        "steps": steps, "batch_size": ap.sft_batch_size, "learning_rate": ap.sft_learning_rate,
        "wall_time_s": arm.wall_time_s, "seed": seed, "accuracy": run.evaluate(load_model(final.path), eval_set, "sft-more"),
        "stored_entries_changed": stored_changed_share(start, final.path),
        "trainer": "trl.SFTTrainer", "history": arm.history, "role": "arm"}))

    rp = replace(config.rlvr, prompts_per_step=ap.grpo_prompts_per_step, learning_rate=ap.grpo_learning_rate)
    steps = max(1, ap.examples // rp.prompts_per_step)
    model = load_model(start)
    arm = run_grpo(model, tok, prompts, steps=steps, prompts_per_step=rp.prompts_per_step, generations=rp.generations,
                   lr=rp.learning_rate, beta=rp.beta, temperature=rp.temperature,
                   max_completion_length=rp.max_completion_length, seed=seed, name="grpo", reward=rp.reward,
                   save_at=_save_steps(steps, ap.checkpoints), progress=progress,
                   save=lambda step: run.save(model, "grpo", step, _grpo_facts(rp, len(prompts), step, source, shared),
                                              {"examples_seen": step * rp.prompts_per_step}, False),
                   **rp.options())
    run.warn("grpo", grpo_reward_warning(arm.history))
    final = run.save(model, "grpo", steps, _grpo_facts(rp, len(prompts), steps, source, shared),
                     {"examples_seen": arm.examples_seen, "tokens": arm.tokens}, True)
    stages.append(_stage_entry(final, root, {
        "steps": steps, "batch_size": rp.prompts_per_step * rp.generations, "learning_rate": rp.learning_rate,
        "wall_time_s": arm.wall_time_s, "seed": seed, "accuracy": run.evaluate(load_model(final.path), eval_set, "grpo"),
        "stored_entries_changed": stored_changed_share(start, final.path),
        "trainer": "trl.GRPOTrainer", "grpo_config": rp.options(), "history": arm.history, "role": "arm"}))

    manifest = root / "lineage.json"
    write_json(manifest, {
        "manifest_version": MANIFEST_VERSION,
        "description": "controlled comparison: from one SFT checkpoint, more SFT vs GRPO on the same prompts and "
                       "the same number of examples (compare each arm with the first checkpoint)",
        "stages": stages,
        "trajectory": _trajectory(run.saved, root),
        "seed": seed,
        "quick": config.quick,
        "arms": {"start": "sft", "sft": "sft-more", "rl": "grpo", "prompts": len(prompts), "examples": ap.examples},
        "warnings": run.warnings,
        "comparisons": stage_comparisons(eval_set, run.per_problem, config.eval_samples, seed,
                                         [("sft", "sft-more"), ("sft", "grpo"), ("sft-more", "grpo")]),
        "environment": _environment(),
        "config": config.to_dict(),
    })
    progress(f"wrote {manifest}")
    return manifest


def _environment() -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "transformers", "trl", "datasets", "accelerate", "tokenizers"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), **versions}
