"""Scoring the samples under every model: teacher-forced with transformers (exact KL against the sampler's kept
nuclei) or through the sampling engine's log-probs (Monte-Carlo KL), journalled per batch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping, Sequence

from ptlens.behavior.config import BehaviorConfig
from ptlens.behavior.engines import Engine, engine_class
from ptlens.behavior.hf_model import HFModel, KLReference
from ptlens.behavior.nucleus import Nucleus
from ptlens.behavior.journal import NUCLEI_DIR, ScoreRecord, load_nuclei, save_nuclei, unscored
from ptlens.behavior.problems import Problem
from ptlens.behavior.progress import Progress
from ptlens.behavior.generate import ModelCtx
from ptlens.errors import PtlensError
from ptlens.results.journal import Journal

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


SCORER_LOADS = [0]
"""Transformers models this process loaded for scoring (:func:`hf_scorer`); a run records how many it loaded."""


def hf_scorer(ctx: ModelCtx, config: BehaviorConfig) -> HFModel:
    """A transformers model loaded to score (counted: a run scored on its engine must load none)."""
    SCORER_LOADS[0] += 1
    return HFModel(ctx.path, ctx.tokenizer, config.device, config.dtype, allow_pickle=config.allow_pickle)


@dataclass
class _Pending:
    """The responses of ``target`` that ``ctx``'s model has not scored yet, and how to feed them to it: the one
    setup both scorers share (transformers and the sampling engine)."""

    ctx: ModelCtx
    tctx: ModelCtx
    index: dict[str, int]
    todo: list[dict]

    @classmethod
    def of(cls, ctx: ModelCtx, ctxs: list[ModelCtx], target: str, problems: Sequence[Problem], samples: Journal,
           scores: Journal) -> "_Pending":
        index = {p.id: i for i, p in enumerate(problems)}
        return cls(ctx, next(c for c in ctxs if c.name == target), index,
                   unscored(ctx.name, target, index, samples, scores))

    @property
    def own(self) -> bool:
        return self.ctx.name == self.tctx.name

    @property
    def same(self) -> bool:
        return same_vocab(self.ctx.tokenizer, self.tctx.tokenizer)

    def batches(self, size: int) -> Iterator[tuple[int, list[dict], list[tuple[list[int], list[int]]]]]:
        """(offset, rows, (prompt ids, response ids) under ``ctx``) per batch of ``size``."""
        same = self.same
        for start in range(0, len(self.todo), size):
            chunk = self.todo[start:start + size]
            yield start, chunk, [(self.ctx.prompt_ids[self.index[r["problem_id"]]],
                                  response_ids(r, self.ctx, self.tctx, same)) for r in chunk]


def score_pending_on_engine(model: Engine, ctx: ModelCtx, ctxs: list[ModelCtx], target: str,
                            problems: Sequence[Problem], samples: Journal, scores: Journal, config: BehaviorConfig,
                            bar: Progress) -> None:
    """:func:`score_pending` with ``Engine.score``: log-probs of the sampled tokens, journalled per batch; the
    sampling-distribution log-prob sums are kept where the vocabularies match (the Monte-Carlo KL's terms)."""
    todo = _Pending.of(ctx, ctxs, target, problems, samples, scores)
    if not todo.todo:
        return
    same, own = todo.same, todo.own
    task = bar.task(f"{ctx.name}: score {target} ({model.name})", len(todo.todo), unit="responses")
    for _, chunk, pairs in todo.batches(config.batch_size):
        out = model.score(pairs, config.sampling())
        scores.append([asdict(ScoreRecord(ctx.name, target, r["problem_id"], r["sample"], s.logprob_sum,
                                          s.entropy_sum if own else None, s.tokens,
                                          sampling_logprob_sum=s.sampling_logprob_sum if same else None,
                                          outside_tokens=s.outside_tokens if same else None))
                       for r, s in zip(chunk, out)])
        bar.advance(task, len(chunk))


def same_vocab(a: Any, b: Any) -> bool:
    return a is b or (a.eos_token_id == b.eos_token_id and a.get_vocab() == b.get_vocab())


def score_pending(model: HFModel, ctx: ModelCtx, ctxs: list[ModelCtx], target: str, problems: Sequence[Problem],
                  samples: Journal, scores: Journal, config: BehaviorConfig, bar: Progress) -> None:
    """Score every not-yet-scored response of ``target`` under ``ctx``'s model, journalled per batch."""
    todo = _Pending.of(ctx, ctxs, target, problems, samples, scores)
    if not todo.todo:
        return
    tctx, index, same, own = todo.tctx, todo.index, todo.same, todo.own
    task = bar.task(f"{ctx.name}: score {target}", len(todo.todo), unit="responses")
    folder = scores.path.parent / NUCLEI_DIR
    # a model scoring its own samples keeps its sampling distributions for the others' cross_kl to it
    keep = own and any(c is not ctx and same_vocab(ctx.tokenizer, c.tokenizer) for c in ctxs)
    kept: dict[tuple[str, int], Nucleus] = {} if own or not same else load_nuclei(folder, target)
    sampler = None
    if not own and same and any((r["problem_id"], r["sample"]) not in kept for r in todo.todo):
        # some distributions were not kept (a resumed run, or a nucleus too wide): load the sampler beside
        sampler = hf_scorer(tctx, config)
    try:
        for start, chunk, pairs in todo.batches(config.batch_size):
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


def response_ids(r: dict, ctx: ModelCtx, tctx: ModelCtx, same: bool) -> list[int]:
    """The sampled response as ``ctx``'s tokens: the ids themselves, or re-tokenised text for another vocabulary."""
    if same:
        return list(r["token_ids"])
    resp = ctx.tokenizer(tctx.tokenizer.decode(r["token_ids"], skip_special_tokens=True),
                         add_special_tokens=False).input_ids
    if r["finish"] == "eos":
        resp.append(ctx.tokenizer.eos_token_id)
    return resp
