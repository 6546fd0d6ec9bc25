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
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ptlens.behavior.engines import Engine, EngineOptions, Request, engine_class, make_engine, pick_engine
from ptlens.behavior.hf_model import HFModel, KLReference, check_weights, pick_device
from ptlens.behavior.nucleus import KL_SMOOTHING, Nucleus
from ptlens.behavior.prompts import AUTO_INSTRUCTION, build_prompt, load_tokenizer, model_instruction, prompt_ids
from ptlens.behavior.sampling import Generation, SamplingSettings, derived_seed
from ptlens.behavior.grading import answer_key, grade, grade_flexible
from ptlens.behavior.memory import check_memory, plan_memory
from ptlens.behavior.metrics import accuracy_by_tag, compare_models, headline_indices
from ptlens.behavior.problems import Problem, load_problems
from ptlens.errors import PtlensError
from ptlens.io import atomic_open, write_json
from ptlens.results import files as F
from ptlens.results.journal import Journal, remove_lock
from ptlens.results.store import BEHAVIOR_SCHEMA as SCHEMA_VERSION
from ptlens.behavior.samples import problem_samples
from ptlens.results.store import SampleRecord, load_samples, save_behavior_results, write_samples

RESULTS_FILE = F.BEHAVIOR_RESULTS
SETTINGS, SAMPLES, SCORES = (Path(f).name for f in (F.BEHAVIOR_SETTINGS, F.SAMPLES_JSONL, F.SCORES_JSONL))
NUCLEI_DIR = Path(F.NUCLEI_DIR).name
MEMORY_PLAN = "memory_plan.json"


@dataclass
class BehaviorConfig:
    """Everything ``ptlens behavior`` needs besides the lineage and the output folder."""

    problems: str = "builtin"
    limit: int | None = None
    seed: int = 0
    n_samples: int = 16
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 512
    engine: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    scoring: str = "auto"
    """"auto": through the sampling engine when it scores (vLLM: cross-perplexity and Monte-Carlo KL from its
    log-probs, no transformers model loaded), else transformers; "engine" insists; "hf": transformers (exact KL)."""
    batch_size: int = 64
    """Samples per engine call (prompts × samples); the unit that a kill can lose."""
    engine_options: dict = field(default_factory=dict)
    """Engine-specific keywords (:class:`EngineOptions` ``extra``), e.g. ``{"engine_kwargs": {"enforce_eager": True}}``
    for vLLM, ``{"processor": {"concurrency": 4}}`` for ray-vllm."""
    shard_index: int = 0
    shard_count: int = 1
    """With shard_count > 1 this process only samples its share of the batches (index % count) into the shared
    journal and returns; a later run without shards scores, merges and writes results."""
    instruction: str | None = AUTO_INSTRUCTION
    """Appended to each question; "auto": what the checkpoint declares, else DEFAULT_INSTRUCTION; None/"": none."""
    overwrite: bool = False
    allow_pickle: bool = False
    n_boot: int = 1000
    ks: list[int] | None = None
    figures: bool = True

    def validate(self) -> None:
        if self.n_samples < 1:
            raise PtlensError(f"--n-samples must be at least 1, got {self.n_samples}")
        if self.max_new_tokens < 1:
            raise PtlensError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}: a model cannot answer in 0 tokens")
        if self.temperature < 0:
            raise PtlensError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise PtlensError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.scoring not in ("auto", "engine", "hf"):
            raise PtlensError(f"scoring must be auto, engine or hf, got {self.scoring!r}")
        if self.batch_size < 1:
            raise PtlensError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0 <= self.shard_index < self.shard_count:
            raise PtlensError(f"shard {self.shard_index} of {self.shard_count}: need 0 <= index < count")

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.temperature, self.top_p, self.max_new_tokens)


@dataclass
class ScoreRecord:
    """One line of ``scores.jsonl``: a response of ``model`` scored by ``scorer`` (itself or another)."""

    scorer: str
    model: str
    problem_id: str
    sample: int
    logprob_sum: float
    entropy_sum: float | None
    tokens: int
    kl_sum: float | None = None
    kl_inf_tokens: int | None = None
    unscorable: int = 0
    """Tokens the scorer cannot embed (ids beyond its vocabulary): then the response is left out (tokens 0)."""
    sampling_logprob_sum: float | None = None
    """Engine scoring only: Σ log q of the response under this scorer's sampling distribution
    (:class:`SampledScores`); the Monte-Carlo KL is the sampler's own minus the scorer's, at merge."""
    outside_tokens: int | None = None
    """Engine scoring only: positions whose token lies outside this scorer's nucleus (smoothed there)."""

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.scorer, self.model, self.problem_id, self.sample)


# ---------------------------------------------------------------- journal files


# ---------------------------------------------------------------- planning


@dataclass(frozen=True)
class Batch:
    """A fixed slice of a model's work: (problem index, sample index) pairs, with its own seed."""

    index: int
    units: tuple[tuple[int, int], ...]


def plan_batches(n_problems: int, n_samples: int, batch_size: int) -> list[Batch]:
    """Problem-major units cut into batches; fixed for given sizes, whatever is already done."""
    units = [(p, s) for p in range(n_problems) for s in range(n_samples)]
    return [Batch(i, tuple(units[j:j + batch_size])) for i, j in enumerate(range(0, len(units), batch_size))]


ENGINE_OPTIONS_ENV = "PTLENS_ENGINE_OPTIONS"


def engine_extra(config: BehaviorConfig) -> dict:
    """Engine-specific keywords: JSON in ``PTLENS_ENGINE_OPTIONS`` (how the CLI passes them), then
    ``config.engine_options`` on top (one level deep: ``engine_kwargs`` and ``processor`` dicts merge)."""
    raw = os.environ.get(ENGINE_OPTIONS_ENV, "").strip()
    try:
        env = json.loads(raw) if raw else {}
    except ValueError:
        raise PtlensError(f"{ENGINE_OPTIONS_ENV}: not JSON: {raw[:80]}") from None
    if not isinstance(env, dict):
        raise PtlensError(f"{ENGINE_OPTIONS_ENV}: expected a JSON object")
    out = dict(env)
    for k, v in config.engine_options.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def sample_seed(run_seed: int, model: str, problem_id: str, sample: int) -> int:
    """The seed of one sample: a function of the run seed, the model's name, the problem and the sample index
    only, so every sample is reproducible on its own (whatever batch, worker or engine call draws it)."""
    return derived_seed(run_seed, model, problem_id, sample)


def batch_requests(units: Sequence[tuple[int, int]], prompt_ids_: Sequence[list[int]], problems: Sequence[Problem],
                   model: str, stop: tuple[str, ...], config: BehaviorConfig) -> tuple[list[Request], list[list[int]]]:
    """One :class:`Request` per problem in ``units`` (its samples' seeds in order), and each request's sample indices."""
    groups: dict[int, list[int]] = {}
    for p, s in units:
        groups.setdefault(p, []).append(s)
    requests = [Request(tuple(prompt_ids_[p]), tuple(sample_seed(config.seed, model, problems[p].id, s) for s in ss),
                        tuple(stop), config.sampling()) for p, ss in groups.items()]
    return requests, [groups[p] for p in groups]


@dataclass
class _ModelCtx:
    name: str
    label: str
    path: Path
    tokenizer: Any
    instruction: str | None
    prompts: list  # Prompt per problem
    prompt_ids: list[list[int]]


def _settings_fingerprint(lineage, config: BehaviorConfig, problems: Sequence[Problem], ctxs: Sequence[_ModelCtx]) -> dict:
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
        _drop_nuclei(bdir)
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


# ---------------------------------------------------------------- progress


class _Progress:
    """Rich progress bars (samples/s and ETA) per model, or nothing."""

    def __init__(self, enabled: bool):
        self.bar = None
        self.started: dict = {}  # task → (when it was added, its unit), until its first batch
        self.estimated: set[str] = set()
        self.left: dict[str, int] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                                       TimeRemainingColumn)
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task):
                    return Text(f"{task.speed:.1f} {task.fields.get('unit', 'samples')}/s" if task.speed else "")

            console = Console(stderr=True)
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                                TimeRemainingColumn(), console=console, transient=False)
            if not console.is_terminal:  # a log file: a line per step and every 10% or 30 s, not one at the end
                from ptlens.progress import LineProgress

                self.bar = LineProgress(console)

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def task(self, description: str, total: int, done: int = 0, unit: str = "samples"):
        if not self.bar:
            return None
        tid = self.bar.add_task(description, total=total, completed=done, unit=unit)
        self.started[tid] = (time.monotonic(), unit)
        return tid

    def advance(self, task, n: int) -> None:
        if self.bar and task is not None:
            self.bar.advance(task, n)
            self._estimate(task, n)

    def plan(self, **left: int) -> None:
        """What the whole run has left to do, by unit (samples, responses): the first batch of each gives a time."""
        self.left = dict(left)

    def _estimate(self, task, n: int) -> None:
        """After the first batch of a unit: how long all of that unit's work (every model) takes at this rate."""
        from ptlens.progress import duration_text

        t0, unit = self.started.pop(task, (None, None))
        if t0 is None or unit in self.estimated or not self.left.get(unit):
            return
        self.estimated.add(unit)
        rate = n / max(time.monotonic() - t0, 1e-9)
        what = "drawing and grading" if unit == "samples" else "scoring"
        self.note(f"{what}: {self.left[unit]:,} {unit} in all at {rate:.1f}/s (first batch) → about "
                  f"{duration_text(self.left[unit] / rate)}")

    def note(self, message: str) -> None:
        if self.bar:
            self.bar.console.print(message, markup=False, highlight=False)


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
    bar = _Progress(progress)
    n = len(lineage.checkpoints)
    ctxs = []
    for cp in lineage.checkpoints:
        if cp.path is None:
            raise PtlensError(f"model {cp.name}: not resolved to a local folder")
        check_weights(cp.path, cp.name, config.allow_pickle)
        tok = load_tokenizer(cp.path, cp.name)
        instruction = model_instruction(cp.path, config.instruction)
        prompts = [build_prompt(tok, p.question, instruction) for p in problems]
        ctxs.append(_ModelCtx(cp.name, cp.label, Path(cp.path), tok, instruction, prompts,
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
                    e = _generate(ctx, problems, config, engine, samples, bar, on_batch, engines)
                    if e is not None:
                        e.close()
                return BehaviorResult(output_dir / RESULTS_FILE, bdir / SAMPLES, {}, [])
            loads = _SCORER_LOADS[0]
            on_engine = engine_scores(config, engine, engines)
            _generate_and_score(ctxs, problems, config, engine, samples, scores, bar, on_batch, engines)
            scoring = {"backend": engine if on_engine else "hf", "kl_estimator": "monte-carlo" if on_engine else "exact"}
            if on_engine:  # observable: a run scored on its engine loads no transformers model (0 on a rerun too)
                scoring["transformers_models_loaded"] = _SCORER_LOADS[0] - loads
    finally:
        samples.close()
        scores.close()
    records = _merge(samples.rows, scores.rows, [c.name for c in ctxs], [p.id for p in problems])
    write_samples(bdir / SAMPLES, records)
    for journal in (SAMPLES, SCORES):  # samples.jsonl was just replaced: no writer can still use the locks
        remove_lock(bdir / journal)
    results = _results(lineage, config, engine, problems, records, ctxs, (bdir / SCORES).stat().st_mtime)
    results["settings"]["scoring"] = scoring  # which backend scored, which KL estimator, transformers loads
    results_path = output_dir / RESULTS_FILE
    figures: list[Path] = []
    if config.figures:
        from ptlens.behavior.figures import write_figures

        figures = write_figures(results, records, bdir)
        results["figures"] = [str(p.relative_to(output_dir)) for p in figures]
    save_behavior_results(output_dir, results)
    return BehaviorResult(results_path, bdir / SAMPLES, results, figures)


class _Borrowed(Engine):
    """An engine the caller opened: used, never closed here."""

    def __init__(self, inner: Engine):
        self.inner = inner
        self.name = inner.name
        self.scores = inner.scores

    def generate(self, requests):
        return self.inner.generate(requests)

    def score(self, pairs, settings, smoothing=KL_SMOOTHING):
        return self.inner.score(pairs, settings, smoothing)

    def scorer(self):
        return self.inner.scorer()


def _generate(ctx: _ModelCtx, problems: Sequence[Problem], config: BehaviorConfig, engine: str, samples: Journal,
              bar: _Progress, on_batch: Callable[[str, int], None] | None, engines: Mapping[str, Engine] | None = None):
    """Plan → generate → grade → journal for one model: the samples of this shard's batches not yet on disk.

    Returns the engine, still open (the caller may score with its transformers model), or None when
    there was nothing to draw.
    """
    batches = plan_batches(len(problems), config.n_samples, config.batch_size)
    done = {(r["problem_id"], r["sample"]) for r in samples.rows if r["model"] == ctx.name}
    if done:
        bar.note(f"{ctx.name}: resumed: {len(done)} of {len(problems) * config.n_samples} samples reused")
    todo = []
    for b in batches:
        if b.index % config.shard_count == config.shard_index:
            units = tuple((p, s) for p, s in b.units if (problems[p].id, s) not in done)
            if units:
                todo.append(Batch(b.index, units))
    if not todo:
        return None
    model = _open_engine(ctx, config, engine, engines)
    try:
        task = bar.task(f"{ctx.name}: sample ({engine})", len(problems) * config.n_samples, len(done))
        for b in todo:
            requests, indices = batch_requests(b.units, ctx.prompt_ids, problems, ctx.name, ctx.prompts[0].stop, config)
            outs = model.generate(requests)
            new = []
            for (p, _), req, ss, gens in zip(_firsts(b.units), requests, indices, outs):
                new += [_record(ctx, problems, p, s, g, seed) for s, seed, g in zip(ss, req.seeds, gens)]
            samples.append([asdict(r) for r in new])
            bar.advance(task, len(new))
            if on_batch:
                on_batch(ctx.name, b.index)
        _check_not_empty(ctx.name, samples)
    except BaseException:
        model.close()
        raise
    return model


def _open_engine(ctx: _ModelCtx, config: BehaviorConfig, engine: str, engines: Mapping[str, Engine] | None) -> Engine:
    """The caller's open engine for this model (borrowed: never closed here), else a new one."""
    if engines and ctx.name in engines:
        return _Borrowed(engines[ctx.name])
    options = EngineOptions(config.device, config.dtype, config.allow_pickle, engine_extra(config))
    return make_engine(engine, ctx.path, ctx.tokenizer, options)


def engine_scores(config: BehaviorConfig, engine: str, engines: Mapping[str, Engine] | None = None) -> bool:
    """Whether this run scores through its sampling engine (Monte-Carlo KL, no transformers model loaded for
    scoring): ``config.scoring`` "engine", or "auto" with an engine that scores (vLLM); "hf" keeps transformers'
    exact full-vocabulary scoring."""
    if config.scoring == "hf":
        return False
    able = all(e.scores for e in (engines or {}).values()) and engine_class(engine).scores
    if config.scoring == "engine" and not able:
        raise PtlensError(f"scoring=engine: engine {engine} does not score; use scoring=hf")
    return able


_SCORER_LOADS = [0]
"""Transformers models this process loaded for scoring (:func:`_hf_scorer`); a run records how many it loaded."""


def _hf_scorer(ctx: _ModelCtx, config: BehaviorConfig) -> HFModel:
    """A transformers model loaded to score (counted: a run scored on its engine must load none)."""
    _SCORER_LOADS[0] += 1
    return HFModel(ctx.path, ctx.tokenizer, config.device, config.dtype, allow_pickle=config.allow_pickle)


def _firsts(units: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The first unit of each problem, in order (the problems of :func:`batch_requests`)."""
    seen: dict[int, tuple[int, int]] = {}
    for u in units:
        seen.setdefault(u[0], u)
    return list(seen.values())


def _generate_and_score(ctxs: list[_ModelCtx], problems: Sequence[Problem], config: BehaviorConfig, engine: str,
                        samples: Journal, scores: Journal, bar: _Progress,
                        on_batch: Callable[[str, int], None] | None, engines: Mapping[str, Engine] | None = None) -> None:
    """Each model in turn: draw its missing samples, then score with it (transformers) its own samples and those
    of the models before it; last, the earlier models score the later ones' samples."""
    if engine_scores(config, engine, engines):
        return _generate_and_score_on_engine(ctxs, problems, config, engine, samples, scores, bar, on_batch, engines)
    names = [c.name for c in ctxs]
    for i, ctx in enumerate(ctxs):
        sampler = _generate(ctx, problems, config, engine, samples, bar, on_batch, engines)
        try:
            if not _pending_scores(ctx.name, names[:i + 1], samples, scores):
                continue
            _check_not_empty(ctx.name, samples)
            model = sampler.scorer() if sampler is not None else None
            if model is None:
                if sampler is not None:
                    sampler.close()  # free the sampling engine's memory before loading the scorer
                    sampler = None
                model = _hf_scorer(ctx, config)
            try:
                for target in names[:i + 1]:
                    _score_pending(model, ctx, ctxs, target, problems, samples, scores, config, bar)
            finally:
                if sampler is None:
                    model.close()
        finally:
            if sampler is not None:
                sampler.close()
    for i, ctx in enumerate(ctxs[:-1]):
        later = [t for t in names[i + 1:] if _pending_scores(ctx.name, [t], samples, scores)]
        if not later:
            continue
        with _hf_scorer(ctx, config) as model:
            for target in later:
                _score_pending(model, ctx, ctxs, target, problems, samples, scores, config, bar)
    _drop_nuclei(scores.path.parent)  # every score is on disk: the kept distributions are not needed again


def _generate_and_score_on_engine(ctxs: list[_ModelCtx], problems: Sequence[Problem], config: BehaviorConfig,
                                  engine: str, samples: Journal, scores: Journal, bar: _Progress,
                                  on_batch: Callable[[str, int], None] | None,
                                  engines: Mapping[str, Engine] | None = None) -> None:
    """:func:`_generate_and_score` through the engine: each model's engine samples, then scores its own samples
    and the earlier models' (``Engine.score``); last, each earlier model's engine is opened again for the later
    models' samples. One model resident at a time, and no transformers model is loaded."""
    names = [c.name for c in ctxs]
    for i, ctx in enumerate(ctxs):
        model = _generate(ctx, problems, config, engine, samples, bar, on_batch, engines)
        try:
            if not _pending_scores(ctx.name, names[:i + 1], samples, scores):
                continue
            _check_not_empty(ctx.name, samples)
            if model is None:
                model = _open_engine(ctx, config, engine, engines)
            for target in names[:i + 1]:
                _score_pending_on_engine(model, ctx, ctxs, target, problems, samples, scores, config, bar)
        finally:
            if model is not None:
                model.close()
    for i, ctx in enumerate(ctxs[:-1]):
        later = [t for t in names[i + 1:] if _pending_scores(ctx.name, [t], samples, scores)]
        if not later:
            continue
        model = _open_engine(ctx, config, engine, engines)
        try:
            for target in later:
                _score_pending_on_engine(model, ctx, ctxs, target, problems, samples, scores, config, bar)
        finally:
            model.close()


def _unscored(scorer: str, target: str, index: dict[str, int], samples: Journal, scores: Journal) -> list[dict]:
    """``target``'s sample rows that ``scorer`` has not scored yet, once each, in a fixed order (problem, sample;
    not the journal's, which depends on batches and workers): the same chunks every time."""
    have = {(r["problem_id"], r["sample"]) for r in scores.rows if r["scorer"] == scorer and r["model"] == target}
    todo, seen = [], set(have)
    for r in samples.rows:
        if r["model"] == target and (r["problem_id"], r["sample"]) not in seen:
            seen.add((r["problem_id"], r["sample"]))
            todo.append(r)
    return sorted(todo, key=lambda r: (index[r["problem_id"]], r["sample"]))


def _score_pending_on_engine(model: Engine, ctx: _ModelCtx, ctxs: list[_ModelCtx], target: str,
                             problems: Sequence[Problem], samples: Journal, scores: Journal, config: BehaviorConfig,
                             bar: _Progress) -> None:
    """:func:`_score_pending` with ``Engine.score``: log-probs of the sampled tokens, journalled per batch; the
    sampling-distribution log-prob sums are kept where the vocabularies match (the Monte-Carlo KL's terms)."""
    index = {p.id: i for i, p in enumerate(problems)}
    todo = _unscored(ctx.name, target, index, samples, scores)
    if not todo:
        return
    tctx = next(c for c in ctxs if c.name == target)
    same = _same_vocab(ctx.tokenizer, tctx.tokenizer)
    own = ctx.name == target
    task = bar.task(f"{ctx.name}: score {target} ({model.name})", len(todo), unit="responses")
    for start in range(0, len(todo), config.batch_size):
        chunk = todo[start:start + config.batch_size]
        pairs = [(ctx.prompt_ids[index[r["problem_id"]]], _response_ids(r, ctx, tctx, same)) for r in chunk]
        out = model.score(pairs, config.sampling())
        scores.append([asdict(ScoreRecord(ctx.name, target, r["problem_id"], r["sample"], s.logprob_sum,
                                          s.entropy_sum if own else None, s.tokens,
                                          sampling_logprob_sum=s.sampling_logprob_sum if same else None,
                                          outside_tokens=s.outside_tokens if same else None))
                       for r, s in zip(chunk, out)])
        bar.advance(task, len(chunk))


def _record(ctx: _ModelCtx, problems: Sequence[Problem], p: int, sample: int, g: Generation, seed: int) -> SampleRecord:
    """Grade one generation into its sample record (scores are merged in at the end of the run)."""
    problem = problems[p]
    gr, flex = grade(g.text, problem.answer), grade_flexible(g.text, problem.answer)
    return SampleRecord(model=ctx.name, label=ctx.label, problem_id=problem.id, sample=sample,
                        prompt=ctx.prompts[p].text, response=g.text, gold=problem.answer,
                        extracted=gr.extracted, answer_key=answer_key(gr.extracted), correct=gr.correct,
                        tokens=len(g.token_ids), truncated=g.finish == "length", finish=g.finish, seed=seed,
                        token_ids=list(g.token_ids), extracted_flexible=flex.extracted,
                        correct_flexible=flex.correct, grading_fallback=gr.fallback)


def _pending_scores(scorer: str, targets: Sequence[str], samples: Journal, scores: Journal) -> bool:
    have = {(r["model"], r["problem_id"], r["sample"]) for r in scores.rows if r["scorer"] == scorer}
    return any(r["model"] in targets and (r["model"], r["problem_id"], r["sample"]) not in have for r in samples.rows)


def _same_vocab(a: Any, b: Any) -> bool:
    return a is b or (a.eos_token_id == b.eos_token_id and a.get_vocab() == b.get_vocab())


def _score_pending(model: HFModel, ctx: _ModelCtx, ctxs: list[_ModelCtx], target: str, problems: Sequence[Problem],
                   samples: Journal, scores: Journal, config: BehaviorConfig, bar: _Progress) -> None:
    """Score every not-yet-scored response of ``target`` under ``ctx``'s model, journalled per batch."""
    index = {p.id: i for i, p in enumerate(problems)}
    todo = _unscored(ctx.name, target, index, samples, scores)
    if not todo:
        return
    tctx = next(c for c in ctxs if c.name == target)
    same = _same_vocab(ctx.tokenizer, tctx.tokenizer)
    task = bar.task(f"{ctx.name}: score {target}", len(todo), unit="responses")
    own = ctx.name == target
    folder = scores.path.parent / NUCLEI_DIR
    # a model scoring its own samples keeps its sampling distributions for the others' cross_kl to it
    keep = own and any(c is not ctx and _same_vocab(ctx.tokenizer, c.tokenizer) for c in ctxs)
    kept: dict[tuple[str, int], Nucleus] = {} if own or not same else load_nuclei(folder, target)
    sampler = None
    if not own and same and any((r["problem_id"], r["sample"]) not in kept for r in todo):
        # some distributions were not kept (a resumed run, or a nucleus too wide): load the sampler beside
        sampler = _hf_scorer(tctx, config)
    try:
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start:start + config.batch_size]
            pairs = [(ctx.prompt_ids[index[r["problem_id"]]], _response_ids(r, ctx, tctx, same)) for r in chunk]
            kl = None
            if sampler is not None:
                kl = KLReference(sampler, [tctx.prompt_ids[index[r["problem_id"]]] for r in chunk], config.sampling())
            elif not own and same:
                kl = KLReference(None, [], config.sampling(), nuclei=[kept[(r["problem_id"], r["sample"])] for r in chunk])
            out = model.score(pairs, kl, config.sampling() if keep else None)
            if keep:
                save_nuclei(folder, target, start, [(r["problem_id"], r["sample"]) for r in chunk],
                            [s.nucleus for s in out])
            scores.append([asdict(ScoreRecord(ctx.name, target, r["problem_id"], r["sample"], s.logprob_sum,
                                              s.entropy_sum if own else None, s.tokens, s.kl_sum, s.kl_inf_tokens,
                                              s.unscorable))
                           for r, s in zip(chunk, out)])
            bar.advance(task, len(chunk))
    finally:
        if sampler is not None:
            sampler.close()


def _response_ids(r: dict, ctx: _ModelCtx, tctx: _ModelCtx, same: bool) -> list[int]:
    """The sampled response as ``ctx``'s tokens: the ids themselves, or re-tokenised text for another vocabulary."""
    if same:
        return list(r["token_ids"])
    resp = ctx.tokenizer(tctx.tokenizer.decode(r["token_ids"], skip_special_tokens=True),
                         add_special_tokens=False).input_ids
    if r["finish"] == "eos":
        resp.append(ctx.tokenizer.eos_token_id)
    return resp


def save_nuclei(folder: Path, model: str, start: int, keys: Sequence[tuple[str, int]],
                nuclei: Sequence[Nucleus | None]) -> None:
    """One scored chunk's nuclei (None: too wide to keep) as ``folder/<model>/<start>.npz``, written atomically."""
    import numpy as np

    have = [(k, n) for k, n in zip(keys, nuclei) if n is not None]
    if not have:
        return
    with atomic_open(folder / model / f"{start:09d}.npz", "wb") as f:
        np.savez(f, problem_ids=np.array([k[0] for k, _ in have]), samples=np.array([k[1] for k, _ in have]),
                 positions=np.array([n.positions for _, n in have], dtype=np.int64),
                 widths=np.concatenate([np.diff(n.offsets.cpu().numpy()) for _, n in have]).astype(np.int64),
                 ids=np.concatenate([n.ids.cpu().numpy() for _, n in have]).astype(np.int64),
                 logp=np.concatenate([n.logp.cpu().float().numpy() for _, n in have]))


def load_nuclei(folder: Path, model: str) -> dict[tuple[str, int], Nucleus]:
    """Every nucleus kept for ``model``'s responses, by (problem id, sample)."""
    import numpy as np
    import torch

    out: dict[tuple[str, int], Nucleus] = {}
    for f in sorted((folder / model).glob("[0-9]*.npz")):
        with np.load(f) as z:
            widths, ids, logp = z["widths"], z["ids"], z["logp"]
            w0 = e0 = 0
            for pid, sample, n in zip(z["problem_ids"].tolist(), z["samples"].tolist(), z["positions"].tolist()):
                w = widths[w0:w0 + n]
                offsets = np.zeros(n + 1, dtype=np.int64)
                np.cumsum(w, out=offsets[1:])
                e1 = e0 + int(offsets[-1])
                out[(pid, int(sample))] = Nucleus(torch.from_numpy(ids[e0:e1].copy()),
                                                  torch.from_numpy(logp[e0:e1].copy()), torch.from_numpy(offsets))
                w0, e0 = w0 + n, e1
    return out


def _drop_nuclei(bdir: Path) -> None:
    import shutil

    shutil.rmtree(bdir / NUCLEI_DIR, ignore_errors=True)


def _check_not_empty(name: str, samples: Journal) -> None:
    mine = [r for r in samples.rows if r["model"] == name]
    if mine and all(not r["response"].strip() for r in mine):
        raise PtlensError(f"model {name}: every one of its {len(mine)} responses is empty (it ends at once); "
                          "check its chat template and end-of-text token, or the --instruction")


# ---------------------------------------------------------------- merge and results


def _merge(sample_rows: list[dict], score_rows: list[dict], names: list[str],
           problem_ids: Sequence[str]) -> list[SampleRecord]:
    """Samples in lineage × problem × sample order, each with its own and cross-model scores."""
    by_key: dict[tuple, dict] = {}
    for r in score_rows:
        by_key[(r["scorer"], r["model"], r["problem_id"], r["sample"])] = r
    order = {n: i for i, n in enumerate(names)}
    porder = {pid: i for i, pid in enumerate(problem_ids)}
    out = []
    seen = set()
    for row in sample_rows:
        rec = SampleRecord.from_dict(row)
        if rec.key in seen:
            continue
        seen.add(rec.key)
        own = by_key.get((rec.model, rec.model, rec.problem_id, rec.sample))
        if own is None:
            raise RuntimeError(f"sample {rec.key} was never scored")
        rec.logprob_sum, rec.entropy_sum = own["logprob_sum"], own["entropy_sum"]
        rec.mean_logprob = own["logprob_sum"] / own["tokens"] if own["tokens"] else None
        rec.mean_entropy = own["entropy_sum"] / own["tokens"] if own["tokens"] else None
        rec.cross_logprobs = {}
        for other in names:
            s = by_key.get((other, rec.model, rec.problem_id, rec.sample))
            if other != rec.model and s is not None:
                kl_sum, kl_inf, estimator = s.get("kl_sum"), s.get("kl_inf_tokens"), "exact" if s.get("kl_sum") is not None else None
                if kl_sum is None and s.get("sampling_logprob_sum") is not None and own.get("sampling_logprob_sum") is not None:
                    # Monte-Carlo: log p̃_A(y) − log q_B(y) along A's own sample y (docs/METRICS.md)
                    kl_sum = own["sampling_logprob_sum"] - s["sampling_logprob_sum"]
                    kl_inf, estimator = s.get("outside_tokens"), "monte-carlo"
                rec.cross_logprobs[other] = {"logprob_sum": s["logprob_sum"], "tokens": s["tokens"],
                                             "mean_logprob": s["logprob_sum"] / max(s["tokens"], 1),
                                             "kl_sum": kl_sum, "kl_inf_tokens": kl_inf, "kl_estimator": estimator,
                                             "unscorable": s.get("unscorable", 0)}
        out.append(rec)
    out.sort(key=lambda r: (order[r.model], porder[r.problem_id], r.sample))
    return out


# SampleRecord, write_samples and load_samples live in ptlens.results.store (problem_samples in behavior.samples) (the report reads
# samples without importing this driver); they are imported above under their old names.


def _results(lineage, config: BehaviorConfig, engine: str, problems: Sequence[Problem],
             records: Sequence[SampleRecord], ctxs: Sequence[_ModelCtx], written: float) -> dict:
    """``written``: when the last score was stored (scores.jsonl is append-only), so that rebuilding results
    from the same samples gives the same file."""
    from ptlens.io import versions

    names = [c.name for c in ctxs]
    grouped = problem_samples(records, names, [p.id for p in problems])
    # headline metrics: the training distribution only when held-out problems are mixed in (they go to by_tag)
    keep = headline_indices([p.tags for p in problems])
    estimators: dict[str, dict[str, str]] = {}
    for r in records:
        for other, c in r.cross_logprobs.items():
            if c.get("kl_estimator"):
                have = estimators.setdefault(r.model, {}).setdefault(other, c["kl_estimator"])
                if have != c["kl_estimator"]:
                    estimators[r.model][other] = "mixed"
    metrics = compare_models({n: [ps[i] for i in keep] for n, ps in grouped.items()}, ks=config.ks,
                             n_boot=config.n_boot, seed=config.seed, kl_estimators=estimators)
    by_tag = accuracy_by_tag(grouped, [p.tags for p in problems], ks=metrics["ks"][-1:], n_boot=config.n_boot,
                             seed=config.seed)
    settings = {k: v for k, v in asdict(config).items() if k not in ("overwrite", "figures", "allow_pickle")}
    settings["engine"] = engine
    return {
        "schema": SCHEMA_VERSION,
        "kind": "ptlens.behavior",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(written)),
        "command": sys.argv,
        "settings": settings,
        "versions": versions(),
        "lineage": lineage.to_dict(),
        "models_info": [{"name": c.name, "label": c.label, "path": str(c.path),
                    "resolved_revision": next((cp.resolved_revision for cp in lineage.checkpoints if cp.name == c.name), None),
                    "prompt_format": "chat_template" if c.prompts[0].chat else "plain",
                    "instruction": c.instruction,
                    "stop_strings": list(c.prompts[0].stop)} for c in ctxs],
        "problems": [p.to_dict() for p in problems],
        **metrics,
        "headline_problems": {"n": len(keep), "of": len(problems),
                              "excluded_tag": "held-out" if len(keep) < len(problems) else None},
        "by_tag": by_tag,
        "grading": grading_counts(records, names),
        "unscorable": unscorable_counts(records),
    }


def grading_counts(records: Sequence[SampleRecord], names: Sequence[str]) -> dict:
    """Per model, over every sample (held-out ones too): how many grades fell back to plain numbers because
    math-verify overran ("timeout") or failed ("error"), and how many responses stated no answer."""
    out = {n: {"samples": 0, "fallback_timeout": 0, "fallback_error": 0, "no_answer": 0} for n in names}
    for r in records:
        c = out[r.model]
        c["samples"] += 1
        c["no_answer"] += r.extracted is None
        if r.grading_fallback:
            c[f"fallback_{r.grading_fallback}"] += 1
    return {"conventions": "docs/GRADING.md", "models": out}


def unscorable_counts(records: Sequence[SampleRecord]) -> dict:
    """{model: {scorer: {"samples", "tokens"}}}: responses a scorer could not score (token ids beyond its
    vocabulary), left out of its cross-model scores; empty when every response was scored."""
    out: dict = {}
    for r in records:
        for scorer, c in (r.cross_logprobs or {}).items():
            if c.get("unscorable"):
                d = out.setdefault(r.model, {}).setdefault(scorer, {"samples": 0, "tokens": 0})
                d["samples"] += 1
                d["tokens"] += int(c["unscorable"])
    return out
