"""Drawing samples: batches planned once, one seed per sample, each generation graded into its record and journalled."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ptlens.behavior.config import BehaviorConfig, engine_extra
from ptlens.behavior.engines import Engine, EngineOptions, Request, make_engine
from ptlens.behavior.nucleus import KL_SMOOTHING
from ptlens.behavior.sampling import Generation, derived_seed
from ptlens.behavior.grading import answer_key, grade, grade_flexible
from ptlens.behavior.journal import check_not_empty
from ptlens.behavior.problems import Problem
from ptlens.behavior.progress import Progress
from ptlens.results.journal import Journal
from ptlens.results.store import SampleRecord


@dataclass(frozen=True)
class Batch:
    """A fixed slice of a model's work: (problem index, sample index) pairs, with its own seed."""

    index: int
    units: tuple[tuple[int, int], ...]


def plan_batches(n_problems: int, n_samples: int, batch_size: int) -> list[Batch]:
    """Problem-major units cut into batches; fixed for given sizes, whatever is already done."""
    units = [(p, s) for p in range(n_problems) for s in range(n_samples)]
    return [Batch(i, tuple(units[j:j + batch_size])) for i, j in enumerate(range(0, len(units), batch_size))]



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
class ModelCtx:
    name: str
    label: str
    path: Path
    tokenizer: Any
    instruction: str | None
    prompts: list  # Prompt per problem
    prompt_ids: list[list[int]]


class Borrowed(Engine):
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


def generate(ctx: ModelCtx, problems: Sequence[Problem], config: BehaviorConfig, engine: str, samples: Journal,
              bar: Progress, on_batch: Callable[[str, int], None] | None, engines: Mapping[str, Engine] | None = None):
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
    model = open_engine(ctx, config, engine, engines)
    try:
        task = bar.task(f"{ctx.name}: sample ({engine})", len(problems) * config.n_samples, len(done))
        for b in todo:
            requests, indices = batch_requests(b.units, ctx.prompt_ids, problems, ctx.name, ctx.prompts[0].stop, config)
            outs = model.generate(requests)
            new = []
            for (p, _), req, ss, gens in zip(firsts(b.units), requests, indices, outs):
                new += [record(ctx, problems, p, s, g, seed) for s, seed, g in zip(ss, req.seeds, gens)]
            samples.append([asdict(r) for r in new])
            bar.advance(task, len(new))
            if on_batch:
                on_batch(ctx.name, b.index)
        check_not_empty(ctx.name, samples)
    except BaseException:
        model.close()
        raise
    return model


def open_engine(ctx: ModelCtx, config: BehaviorConfig, engine: str, engines: Mapping[str, Engine] | None) -> Engine:
    """The caller's open engine for this model (borrowed: never closed here), else a new one."""
    if engines and ctx.name in engines:
        return Borrowed(engines[ctx.name])
    options = EngineOptions(config.device, config.dtype, config.allow_pickle, engine_extra(config))
    return make_engine(engine, ctx.path, ctx.tokenizer, options)


def firsts(units: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The first unit of each problem, in order (the problems of :func:`batch_requests`)."""
    seen: dict[int, tuple[int, int]] = {}
    for u in units:
        seen.setdefault(u[0], u)
    return list(seen.values())


def record(ctx: ModelCtx, problems: Sequence[Problem], p: int, sample: int, g: Generation, seed: int) -> SampleRecord:
    """Grade one generation into its sample record (scores are merged in at the end of the run)."""
    problem = problems[p]
    gr, flex = grade(g.text, problem.answer), grade_flexible(g.text, problem.answer)
    return SampleRecord(model=ctx.name, label=ctx.label, problem_id=problem.id, sample=sample,
                        prompt=ctx.prompts[p].text, response=g.text, gold=problem.answer,
                        extracted=gr.extracted, answer_key=answer_key(gr.extracted), correct=gr.correct,
                        tokens=len(g.token_ids), truncated=g.finish == "length", finish=g.finish, seed=seed,
                        token_ids=list(g.token_ids), extracted_flexible=flex.extracted,
                        correct_flexible=flex.correct, grading_fallback=gr.fallback)
