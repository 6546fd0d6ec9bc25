"""The behaviour driver: problems → prompts → samples → grades → scores → metrics, resumable on disk.

Files under ``OUTPUT/behavior/``:

- ``settings.json``: what the samples depend on (settings and checkpoint files, :mod:`ptlens.results.reuse`); a
  rerun with other settings, or after a checkpoint's files changed, is refused.
- ``memory_plan.json``: each model's bytes, the devices and what goes where (:mod:`ptlens.behavior.memory`).
- ``samples.jsonl``: one :class:`SampleRecord` per line, appended and flushed per batch.
- ``scores.jsonl``: the teacher-forced scoring journal (:class:`ScoreRecord`), appended per batch.
- ``nuclei/``: while a run scores, each model's sampling distribution along its own responses (kept from its
  own scoring pass, so cross_kl needs only the scorer); removed when every score is on disk.

One loop for every engine (:mod:`ptlens.behavior.engines` registry): plan → generate → grade →
journal, then score with transformers. Every sample has its own seed, derived from (run seed, model,
problem id, sample index): whichever batch, worker or resumed run draws it, a sample is the same
(for a given engine). The journals take many writers: each append is one ``write`` on an
``O_APPEND`` descriptor under an exclusive lock, so shard workers (``shard_index``/``shard_count``)
can sample into the same folder at once; a run without shards then scores and merges.

When every sample is generated and scored, ``samples.jsonl`` is rewritten (atomically) with
the scores merged in, metrics go to ``OUTPUT/model_comparison_results.json`` and figures next
to the samples. A kill loses at most the batch in flight: on restart a partial last line is
cut off and only the samples not on disk are drawn again, so resumed and uninterrupted runs
write the same samples.

This module is the driver (the order of models, the settings check, the run's files); its parts live beside it:
:mod:`~ptlens.behavior.config` (what is asked), :mod:`~ptlens.behavior.generate` (batches, seeds, generate and
grade), :mod:`~ptlens.behavior.scoring` (transformers or engine scoring), :mod:`~ptlens.behavior.journal` (the
folder's files, nuclei), :mod:`~ptlens.behavior.progress` and :mod:`~ptlens.behavior.assemble` (merge, results).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ptlens.behavior.assemble import build_results, merge
from ptlens.behavior.config import BehaviorConfig, engine_extra
from ptlens.behavior.engines import Engine, pick_engine
from ptlens.behavior.hf_model import check_weights, pick_device
from ptlens.behavior.prompts import build_prompt, load_tokenizer, model_instruction, prompt_ids
from ptlens.behavior.journal import (
    MEMORY_PLAN,
    RESULTS_FILE,
    SAMPLES,
    SCORES,
    SETTINGS,
    check_not_empty,
    drop_nuclei,
    pending_scores,
)
from ptlens.behavior.memory import check_memory, plan_memory
from ptlens.behavior.problems import Problem, load_problems
from ptlens.behavior.progress import Progress
from ptlens.behavior.generate import ModelCtx, generate, open_engine
from ptlens.behavior.scoring import SCORER_LOADS, engine_scores, hf_scorer, score_pending, score_pending_on_engine
from ptlens.errors import PtlensError
from ptlens.io import write_json
from ptlens.results import files as F
from ptlens.results.journal import Journal, remove_lock
from ptlens.results.store import BEHAVIOR_SCHEMA as SCHEMA_VERSION
from ptlens.results.store import save_behavior_results, write_samples


def _settings_fingerprint(lineage, config: BehaviorConfig, problems: Sequence[Problem], ctxs: Sequence[ModelCtx]) -> dict:
    """What the samples depend on: settings, problems, and every file of each checkpoint (:mod:`ptlens.results.reuse`)."""
    from ptlens.results.reuse import fingerprint

    return fingerprint(lineage, {
        "schema": SCHEMA_VERSION,
        "problems": config.problems,
        "limit": config.limit,
        "seed": config.seed,
        "n_samples": config.n_samples,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_new_tokens": config.max_new_tokens,
        "instruction": config.instruction,
        "instructions": [c.instruction for c in ctxs],
        "problem_ids": [p.id for p in problems],
        "problems_sha256": hashlib.sha256(json.dumps([[p.id, p.question, p.answer] for p in problems]).encode()).hexdigest(),
        "dtype": config.dtype,
        "seeding": "per-sample",
        "models": [{"name": c.name, "spec": c.spec, "resolved_revision": c.resolved_revision} for c in lineage.checkpoints],
    }, part="model")


def _check_settings(bdir: Path, want: dict, overwrite: bool) -> None:
    """Resume only samples made from the same checkpoint files with the same settings; else refuse, one line."""
    from ptlens.results.reuse import compare

    f = bdir / SETTINGS
    if overwrite:
        for name in (SETTINGS, SCORES, SAMPLES):
            (bdir / name).unlink(missing_ok=True)
        drop_nuclei(bdir)
        return
    if not f.is_file():
        if (bdir / SAMPLES).exists():
            raise PtlensError(f"{bdir}: samples without settings.json; rerun with --overwrite")
        return
    try:
        have = json.loads(f.read_text())
    except ValueError:
        raise PtlensError(f"{f}: unreadable; rerun with --overwrite") from None
    cmp = compare(have, want)
    cmp.refuse_changed(bdir / SAMPLES)
    if not cmp.same:
        raise PtlensError(f"{bdir} holds samples made with other settings ({cmp.what()}); "
                          "use another --output-dir or pass --overwrite")


# ---------------------------------------------------------------- the run


@dataclass
class BehaviorResult:
    results_path: Path
    samples_path: Path
    results: dict
    figures: list[Path]


def run_behavior(lineage, config: BehaviorConfig, output_dir: str | Path, progress: bool = True,
                 on_batch: Callable[[str, int], None] | None = None,
                 engines: Mapping[str, Engine] | None = None) -> BehaviorResult:
    """Sample, grade and score every model of ``lineage`` on the configured problems; write results and figures.

    ``on_batch(model_name, batch_index)`` is called after each batch is on disk (tests use it
    to interrupt a run). A shard worker (``config.shard_count`` > 1) only samples its batches and returns
    a result with empty ``results``. ``engines``: already open engines by model name, used instead of
    opening ``config.engine`` for those models and left open (a long-lived vLLM worker serves several runs).
    """
    config.validate()
    output_dir = Path(output_dir)
    bdir = output_dir / F.BEHAVIOR_DIR
    problems = load_problems(config.problems, config.limit, config.seed)
    engine = pick_engine(config.engine, config.device)
    bar = Progress(progress)
    n = len(lineage.checkpoints)
    ctxs = []
    for cp in lineage.checkpoints:
        if cp.path is None:
            raise PtlensError(f"model {cp.name}: not resolved to a local folder")
        check_weights(cp.path, cp.name, config.allow_pickle)
        tok = load_tokenizer(cp.path, cp.name)
        instruction = model_instruction(cp.path, config.instruction)
        prompts = [build_prompt(tok, p.question, instruction) for p in problems]
        ctxs.append(ModelCtx(cp.name, cp.label, Path(cp.path), tok, instruction, prompts,
                              [prompt_ids(tok, pr) for pr in prompts]))
    memory = plan_memory([(c.name, c.path) for c in ctxs], engine,
                         "cpu" if config.device == "cpu" else pick_device(config.device), config.dtype,
                         engine_extra(config).get("engine_kwargs"))
    check_memory(memory)  # a plan that cannot fit stops here, before any sampling
    want = {**_settings_fingerprint(lineage, config, problems, ctxs), "engine": engine}  # resolved: auto → hf
    if engine_scores(config, engine, engines):
        want["scoring"] = engine  # scores from the engine's log-probs: a journal scored otherwise is not reused
    _check_settings(bdir, want, config.overwrite)
    # the plan line after every check that can refuse, so a refusal stays one line
    bar.note(f"behaviour: {len(problems):,} problems × {config.n_samples} samples × {n} models = "
             f"{len(problems) * config.n_samples * n:,} samples to draw and grade, each then scored under "
             f"{'each of the' if n > 1 else 'the'} {n} model{'s' if n > 1 else ''} (engine {engine}); "
             "a time estimate follows the first batch")
    bdir.mkdir(parents=True, exist_ok=True)
    write_json(bdir / SETTINGS, {**want, "batch_size": config.batch_size})
    write_json(bdir / MEMORY_PLAN, memory.to_dict())  # beside the results: free memory varies between runs

    samples = Journal(bdir / SAMPLES)
    scores = Journal(bdir / SCORES)
    total = len(problems) * config.n_samples * len(ctxs)
    bar.plan(samples=max(total - len({(r["model"], r["problem_id"], r["sample"]) for r in samples.rows}), 0),
             responses=max(total * len(ctxs) - len(scores.rows), 0))
    try:
        with bar:
            if config.shard_count > 1:
                for ctx in ctxs:
                    e = generate(ctx, problems, config, engine, samples, bar, on_batch, engines)
                    if e is not None:
                        e.close()
                return BehaviorResult(output_dir / RESULTS_FILE, bdir / SAMPLES, {}, [])
            loads = SCORER_LOADS[0]
            on_engine = engine_scores(config, engine, engines)
            _generate_and_score(ctxs, problems, config, engine, samples, scores, bar, on_batch, engines)
            scoring = {"backend": engine if on_engine else "hf", "kl_estimator": "monte-carlo" if on_engine else "exact"}
            if on_engine:  # observable: a run scored on its engine loads no transformers model (0 on a rerun too)
                scoring["transformers_models_loaded"] = SCORER_LOADS[0] - loads
    finally:
        samples.close()
        scores.close()
    records = merge(samples.rows, scores.rows, [c.name for c in ctxs], [p.id for p in problems])
    write_samples(bdir / SAMPLES, records)
    for journal in (SAMPLES, SCORES):  # samples.jsonl was just replaced: no writer can still use the locks
        remove_lock(bdir / journal)
    results = build_results(lineage, config, engine, problems, records, ctxs, (bdir / SCORES).stat().st_mtime)
    results["settings"]["scoring"] = scoring  # which backend scored, which KL estimator, transformers loads
    results_path = output_dir / RESULTS_FILE
    figures: list[Path] = []
    if config.figures:
        from ptlens.behavior.figures import write_figures

        figures = write_figures(results, records, bdir)
        results["figures"] = [str(p.relative_to(output_dir)) for p in figures]
    save_behavior_results(output_dir, results)
    return BehaviorResult(results_path, bdir / SAMPLES, results, figures)


def _generate_and_score(ctxs: list[ModelCtx], problems: Sequence[Problem], config: BehaviorConfig, engine: str,
                        samples: Journal, scores: Journal, bar: Progress,
                        on_batch: Callable[[str, int], None] | None, engines: Mapping[str, Engine] | None = None) -> None:
    """Each model in turn: draw its missing samples, then score with it its own samples and those of the models
    before it; last, the earlier models score the later ones' samples. One model resident at a time.

    Scored by transformers (the sampling engine's own model where it has one, else one loaded after the engine is
    closed), or through the engine (``Engine.score``, :func:`engine_scores`): then each earlier model's engine is
    opened again for the later models' samples and no transformers model is loaded."""
    on_engine = engine_scores(config, engine, engines)
    score = score_pending_on_engine if on_engine else score_pending
    names = [c.name for c in ctxs]
    for i, ctx in enumerate(ctxs):
        sampler = generate(ctx, problems, config, engine, samples, bar, on_batch, engines)
        try:
            if not pending_scores(ctx.name, names[:i + 1], samples, scores):
                continue
            check_not_empty(ctx.name, samples)
            loaded = None  # a scorer loaded here, closed after scoring
            if on_engine:
                model = sampler = sampler if sampler is not None else open_engine(ctx, config, engine, engines)
            else:
                model = sampler.scorer() if sampler is not None else None
                if model is None:
                    if sampler is not None:
                        sampler.close()  # free the sampling engine's memory before loading the scorer
                        sampler = None
                    model = loaded = hf_scorer(ctx, config)
            try:
                for target in names[:i + 1]:
                    score(model, ctx, ctxs, target, problems, samples, scores, config, bar)
            finally:
                if loaded is not None:
                    loaded.close()
        finally:
            if sampler is not None:
                sampler.close()
    for i, ctx in enumerate(ctxs[:-1]):
        later = [t for t in names[i + 1:] if pending_scores(ctx.name, [t], samples, scores)]
        if not later:
            continue
        model = open_engine(ctx, config, engine, engines) if on_engine else hf_scorer(ctx, config)
        try:
            for target in later:
                score(model, ctx, ctxs, target, problems, samples, scores, config, bar)
        finally:
            model.close()
    if not on_engine:
        drop_nuclei(scores.path.parent)  # every score is on disk: the kept distributions are not needed again
