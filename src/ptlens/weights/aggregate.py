"""Parameter-weighted aggregates: sum the raw sums of a set of tensors, then take ratios.

rel_change of a set is √Σ‖Δ‖² / √Σ‖W_A‖², changed shares are Σ changed / Σ entries (docs/METRICS.md);
never a mean of per-tensor ratios. Spectral metrics have no such additive form: for them a
set reports the parameter-weighted mean over its matrices, and says so in its name.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

import numpy as np

from ptlens.results import registry as REG
from ptlens.weights import kernels as K
from ptlens.weights import metrics as M
from ptlens.weights import null as N
from ptlens.weights.records import PairRecord, TensorRecord

SCOPES = ("all", "no_embed_head")


NULLED_SPECTRAL = tuple(m.name for m in REG.metrics(REG.SPECTRAL) if m.null)
"""Spectral metrics with a ``_null`` (stable_rank, rank_fraction, principal_overlap): from the metric registry."""


def _weighted_spectral(recs: list[TensorRecord]) -> dict[str, float]:
    """Parameter-weighted means of the spectral values; each null over the same matrices as its metric.

    ``<metric>_wmean_null`` (also written as ``<metric>_null_wmean``) averages the null over
    the matrices that have both the observed value and its null, with the same weights.
    """
    num: dict[str, float] = defaultdict(float)
    den: dict[str, float] = defaultdict(float)
    for r in recs:
        w = float(r.sums[K.N])
        for k, v in r.spectral.items():
            if k.endswith("_null"):
                continue
            if isinstance(v, (int, float)) and v is not None:
                num[k] += w * v
                den[k] += w
        for k in NULLED_SPECTRAL:
            v, v0 = r.spectral.get(k), r.spectral.get(f"{k}_null")
            if isinstance(v, (int, float)) and isinstance(v0, (int, float)):
                num[f"{k}_null"] += w * v0
                den[f"{k}_null"] += w
    out = {f"{k}_wmean": num[k] / den[k] for k in num if den[k] > 0 and not k.endswith("_null")}
    for k in NULLED_SPECTRAL:
        if den[f"{k}_null"] > 0:
            out[f"{k}_wmean_null"] = out[f"{k}_null_wmean"] = num[f"{k}_null"] / den[f"{k}_null"]
    return out


def _null_elementwise(recs: list[TensorRecord]) -> dict[str, float | None]:
    """Element-wise nulls of a set: ratios of the summed (entry-scaled) null sample sums, like the observed."""
    sums = [r.null_sums for r in recs if r.null_sums is not None]
    return N.elementwise(np.sum(sums, axis=0) if sums else np.zeros(N.NS_FIELDS))


def aggregate(records: Iterable[TensorRecord], key: Callable[[TensorRecord], tuple]) -> list[dict]:
    """One row per (transition, *key): element-wise metrics of the summed sums + spectral means."""
    groups: dict[tuple, list[TensorRecord]] = defaultdict(list)
    for r in records:
        k = key(r)
        if k is not None:
            groups[(r.transition, *k)].append(r)
    rows = []
    for k, recs in groups.items():
        s = np.sum([r.sums for r in recs], axis=0)
        row = {"transition": k[0], "key": list(k[1:]), "tensors": len(recs), **M.finalize(s)}
        row.update(_null_elementwise(recs))
        row.update(_weighted_spectral(recs))
        row["added_rows"] = sum(r.added_rows for r in recs)
        rows.append(row)
    return rows


def aggregate_pairs(pairs: Iterable[PairRecord], key: Callable[[PairRecord], tuple]) -> list[dict]:
    groups: dict[tuple, list[PairRecord]] = defaultdict(list)
    for p in pairs:
        k = key(p)
        if k is not None:
            groups[(p.t1, p.t2, *k)].append(p)
    return [
        {"t1": k[0], "t2": k[1], "key": list(k[2:]), "tensors": len(ps),
         "delta_cosine": M.delta_cosine(np.sum([p.sums for p in ps], axis=0))}
        for k, ps in groups.items()
    ]


def _scope(r, scope: str):
    if scope == "no_embed_head" and r.group in ("embedding", "head"):
        return None
    return ()


def all_aggregates(records: list[TensorRecord], pairs: list[PairRecord]) -> dict[str, list[dict]]:
    """The aggregates the report and summary.json carry."""
    return {
        "model": aggregate(records, lambda r: _scope(r, "all")),
        "model_no_embed_head": aggregate(records, lambda r: _scope(r, "no_embed_head")),
        "group": aggregate(records, lambda r: (r.group,)),
        "kind": aggregate(records, lambda r: (r.kind,)),
        "layer": aggregate(records, lambda r: (r.layer,) if r.layer is not None else None),
        "layer_group": aggregate(records, lambda r: (r.layer, r.group) if r.layer is not None else None),
        "layer_kind": aggregate(records, lambda r: (r.layer, r.kind) if r.layer is not None else None),
        "delta_cosine_model": aggregate_pairs(pairs, lambda p: _scope(p, "all")),
        "delta_cosine_model_no_embed_head": aggregate_pairs(pairs, lambda p: _scope(p, "no_embed_head")),
        "delta_cosine_group": aggregate_pairs(pairs, lambda p: (p.group,)),
        "delta_cosine_layer": aggregate_pairs(pairs, lambda p: (p.layer,) if p.layer is not None else None),
    }
