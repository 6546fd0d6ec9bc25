"""Paired differences between two models that the behaviour run did not store (it stores neighbours only).

Recomputed from ``behavior/samples.jsonl`` with the behaviour engine's own estimators and the
same bootstrap (problem resamples drawn from the stored seed and count) and the same paired
sign-flip test (patterns from the stored seed and count), so an SFT → RLVR difference across a
DPO stage has a paired interval and p-value like the stored ones. Only the metrics the
verdicts use are computed; this is cheap (no model is loaded).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from ptlens.results.store import BehaviorResults

VERDICT_METRICS = ("accuracy", "distinct_answers", "answer_confidence", "length_mean", "distinct_4",
                   "token_entropy", "ece")


def _problems(rows: Sequence[dict], model: str, ids: Sequence[str]):
    """The model's samples grouped per problem, or the reason they cannot be (a str)."""
    from ptlens.behavior.metrics import ProblemSamples

    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("model") == model:
            groups.setdefault(r.get("problem_id"), []).append(r)
    if not groups:
        return f"no samples of {model} in behavior/samples.jsonl"
    out = []
    for pid in ids:
        rs = sorted(groups.get(pid, []), key=lambda r: r.get("sample", 0))
        if not rs:
            return f"no samples of {model} for problem {pid} in behavior/samples.jsonl"
        out.append(ProblemSamples(
            problem_id=pid, correct=[bool(r.get("correct")) for r in rs], keys=[r.get("answer_key") or "" for r in rs],
            texts=[r.get("response") or "" for r in rs], lengths=[int(r.get("tokens") or 0) for r in rs],
            truncated=[bool(r.get("truncated")) for r in rs],
            logprob_sums=[float(r["logprob_sum"]) if r.get("logprob_sum") is not None else math.nan for r in rs],
            entropy_sums=[float(r["entropy_sum"]) if r.get("entropy_sum") is not None else math.nan for r in rs]))
    return out


def pair_differences(results: BehaviorResults | dict, rows: Sequence[dict], pairs: Iterable[tuple[str, str]],
                     ks: Sequence[int] | None = None) -> dict[tuple[str, str], dict[str, dict]]:
    """{(a, b): {metric: {"value", "lo", "hi", "p"}}} of B − A with paired problem resamples; the pairs that
    cannot be computed are left out (:func:`pair_differences_why` says why)."""
    return pair_differences_why(results, rows, pairs, ks)[0]


def pair_differences_why(results: BehaviorResults | dict, rows: Sequence[dict], pairs: Iterable[tuple[str, str]],
                         ks: Sequence[int] | None = None
                         ) -> tuple[dict[tuple[str, str], dict[str, dict]], dict[tuple[str, str], str]]:
    """:func:`pair_differences` and, for every pair not computed, why (missing samples, or samples the estimators
    reject); the report lists those beside the verdict that then reads "not measured"."""
    from ptlens.behavior.metrics import headline_indices, model_statistics, paired_differences
    from ptlens.stats.bootstrap import resample_weights
    from ptlens.stats.permutation import flip_patterns

    results = BehaviorResults.coerce(results) or BehaviorResults({}, {}, {})
    problems = results.problems or []
    ids = [p.get("id") for p in problems]
    if (results.headline_problems or {}).get("excluded_tag"):  # same problems as the stored headline metrics
        ids = [ids[i] for i in headline_indices([p.get("tags") or () for p in problems])]
    if not ids:
        ids = sorted({r.get("problem_id") for r in rows})
    boot = results.metrics.get("bootstrap") or {}
    weights = resample_weights(len(ids), int(boot.get("resamples") or 1000), int(boot.get("seed") or 0))
    test = results.metrics.get("test") or {}
    flips = flip_patterns(len(ids), int(test.get("permutations") or 2000), int(test.get("seed") or boot.get("seed") or 0))
    ks = list(ks or results.ks or [1])
    out, why = {}, {}
    for a, b in pairs:
        pa, pb = _problems(rows, a, ids), _problems(rows, b, ids)
        if isinstance(pa, str) or isinstance(pb, str):
            why[(a, b)] = pa if isinstance(pa, str) else pb
            continue
        try:
            sa, sb = model_statistics(pa, ks), model_statistics(pb, ks)
        except (KeyError, ValueError) as e:  # malformed stored samples: say so rather than guess
            why[(a, b)] = f"the stored samples could not be scored ({type(e).__name__}: {e})"
            continue
        metrics = [m for m in (*VERDICT_METRICS, f"pass@{max(ks)}") if m in sa and m in sb]
        out[(a, b)] = paired_differences({m: sb[m] for m in metrics}, {m: sa[m] for m in metrics}, weights, flips)
    return out, why
