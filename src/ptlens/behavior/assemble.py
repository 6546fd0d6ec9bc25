"""Assembling the results: the journals merged into sample records, then metrics and the results file's dict."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Sequence

from ptlens.behavior.config import BehaviorConfig
from ptlens.behavior.metrics import accuracy_by_tag, compare_models, headline_indices
from ptlens.behavior.problems import Problem
from ptlens.behavior.generate import ModelCtx
from ptlens.behavior.samples import problem_samples
from ptlens.results.store import BEHAVIOR_SCHEMA as SCHEMA_VERSION
from ptlens.results.store import SampleRecord

def merge(sample_rows: list[dict], score_rows: list[dict], names: list[str],
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


def build_results(lineage, config: BehaviorConfig, engine: str, problems: Sequence[Problem],
             records: Sequence[SampleRecord], ctxs: Sequence[ModelCtx], written: float) -> dict:
    """``written``: when the last score was stored (scores.jsonl is append-only), so that rebuilding results
    from the same samples gives the same file."""
    from ptlens.io import command_line, versions

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
        "command": command_line(),
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
