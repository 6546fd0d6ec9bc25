"""The metrics' input: one model's graded samples of one problem (``ProblemSamples``), grouped from the stored
sample records in lineage and problem order (``problem_samples``). Apart from the metrics so that the results store
and the report can build it without the other way round."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ptlens.errors import PtlensError
from ptlens.results.store import SampleRecord


@dataclass
class ProblemSamples:
    """One model's graded samples of one problem: the input of every metric."""

    problem_id: str
    correct: list[bool]
    keys: list[str]
    texts: list[str]
    lengths: list[int]
    truncated: list[bool]
    logprob_sums: list[float]
    entropy_sums: list[float]
    cross: dict[str, tuple[list[float], list[int]]] = field(default_factory=dict)
    """other model → (per-sample log-prob sums of this response under it, its token counts)."""
    cross_kl: dict[str, tuple[list[float], list[int]]] = field(default_factory=dict)
    """other model → (per-sample KL sums from this model's sampling distribution to the other's, per-sample
    counts of tokens where the unsmoothed KL is infinite); counted over this model's own tokens (``lengths``)."""
    correct_flexible: list[bool] = field(default_factory=list)
    """Per-sample correctness under lm-eval's flexible-extract (the last number); empty when not recorded."""

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def c(self) -> int:
        return int(sum(self.correct))


def problem_samples(records: Sequence[SampleRecord], names: Sequence[str], problem_ids: Sequence[str]) -> dict:
    """Group merged samples per model and problem, in the given orders, for the metrics
    (``{model: [ProblemSamples, …]}``)."""
    groups: dict[tuple[str, str], list[SampleRecord]] = {}
    for r in records:
        groups.setdefault((r.model, r.problem_id), []).append(r)
    out: dict[str, list] = {}
    for name in names:
        out[name] = []
        for pid in problem_ids:
            rs = sorted(groups.get((name, pid), []), key=lambda r: r.sample)
            if not rs:
                raise PtlensError(f"model {name} has no samples for problem {pid}")
            others = {o for r in rs for o in r.cross_logprobs}
            cross = {o: ([r.cross_logprobs[o]["logprob_sum"] for r in rs], [int(r.cross_logprobs[o]["tokens"]) for r in rs])
                     for o in others if all(o in r.cross_logprobs for r in rs)}
            cross_kl = {o: ([float(r.cross_logprobs[o]["kl_sum"]) for r in rs],
                            [int(r.cross_logprobs[o]["kl_inf_tokens"]) for r in rs])
                        for o in cross if all(r.cross_logprobs[o].get("kl_sum") is not None for r in rs)}
            out[name].append(ProblemSamples(
                problem_id=pid, correct=[r.correct for r in rs], keys=[r.answer_key for r in rs],
                texts=[r.response for r in rs], lengths=[r.tokens for r in rs], truncated=[r.truncated for r in rs],
                logprob_sums=[float(r.logprob_sum) for r in rs], entropy_sums=[float(r.entropy_sum) for r in rs],
                cross=cross, cross_kl=cross_kl,
                correct_flexible=[bool(r.correct_flexible) for r in rs] if all(r.correct_flexible is not None
                                                                                for r in rs) else []))
    return out
