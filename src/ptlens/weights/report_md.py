"""weight_analysis_report.md: the scan's answers in numbers, from summary.json alone.

It states what was measured and how transitions compare; it never prints an expectation as
a finding.
"""

from __future__ import annotations

from ptlens.results import registry as REG


def fmt_value(v, pct: bool = False, digits: int = 3) -> str:
    """A weight metric for a table: – for None, a percentage for shares, 3 significant digits, e notation when tiny."""
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.{max(0, digits - 1)}f}%"
    return REG.fmt_number(v, digits)


_f = fmt_value


def metric_cell(r: dict, m: REG.Metric, k: int, with_null: bool = False) -> str:
    """One registered metric of an aggregate row, formatted as the registry says (its null beside it if asked)."""
    if with_null and m.null:
        v = _f(r.get(m.aggregate_key(k)), pct=m.pct, digits=m.digits)
        n = r.get(m.null_key(k))
        return v if n is None else f"{v} (null {_f(n, pct=m.pct, digits=m.digits)})"
    return _f(r.get(m.aggregate_key(k)), pct=m.pct, digits=m.digits)


def _vn(r: dict, key: str, null_key: str | None = None, pct: bool = False) -> str:
    """Observed value with its null beside it: what an unstructured update of the same size would give."""
    v = _f(r.get(key), pct=pct)
    nk = null_key or f"{key}_null"
    return v if r.get(nk) is None else f"{v} (null {_f(r.get(nk), pct=pct)})"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _by(rows: list[dict], transition: str) -> list[dict]:
    return [r for r in rows if r["transition"] == transition]


def weight_report_markdown(s: dict) -> str:
    agg = s["aggregates"]
    k = s["settings"].get("k", 16)
    trans = [t["name"] for t in s["transitions"]]
    cons = [t["name"] for t in s["transitions"] if t["kind"] == "consecutive"]
    out = ["# Weight analysis", ""]
    lin = s["lineage"]["checkpoints"]
    out += ["## Lineage", "", _table(
        ["stage", "model", "revision", "training facts"],
        [[c["name"], f"`{c.get('repo_id') or c['spec']}`", (c.get("resolved_revision") or c.get("revision") or "local")[:12],
          ", ".join(f"{k2} {v:,}" if isinstance(v, int) else f"{k2} {v}" for k2, v in c.get("facts", {}).items()
                    if k2 != "source") or "–"] for c in lin]), ""]
    spectral = s["settings"]["spectral"]
    out += [f"{s['tensors_scanned']} tensors, {s['bytes_read'] / 1e9:.3g} GB of checkpoint data read in "
            f"{s['seconds']:.1f} s ({_f(s.get('throughput_gb_per_s'))} GB/s) on {s['settings']['device_used']}; "
            f"spectral metrics: {spectral}" + (f" (k = {k})" if spectral != "off" else "") +
            f"; tolerance for `changed_tol`: {s['settings']['tolerance']:g}.", ""]

    out += ["## How large, how sparse, how low-rank: whole model", "",
            "Parameter-weighted over all tensors (√Σ‖ΔW‖² / √Σ‖W_A‖²; changed shares = Σ changed / Σ entries). "
            "The second block leaves out embeddings and the LM head.", ""]
    shown = REG.metrics(table=REG.WEIGHT_MD)  # which metrics, in which format: the registry
    for scope, title in (("model", "all tensors"), ("model_no_embed_head", "without embeddings / head")):
        rows = []
        for t in trans:
            r = next((x for x in agg[scope] if x["transition"] == t), None)
            if r is None:
                continue
            rows.append([t, *[metric_cell(r, m, k, with_null=True) for m in shown]])
        out += [f"**{title}**", "", _table(["transition", *[m.header(k) for m in shown]], rows), ""]

    out += ["## Which module groups move most", ""]
    groups = sorted({r["key"][0] for r in agg["group"]})
    out += [_table(["transition", *[f"{g} rel. change" for g in groups], *[f"{g} changed" for g in groups]],
                   [[t, *[_f(next((r["rel_change"] for r in _by(agg["group"], t) if r["key"] == [g]), None)) for g in groups],
                     *[next((_vn(r, "changed_exact", pct=True) for r in _by(agg["group"], t) if r["key"] == [g]), "–")
                       for g in groups]] for t in trans]), ""]
    for t in trans:
        rows = sorted(_by(agg["group"], t), key=lambda r: -(r["rel_change"] or 0))
        if rows:
            top = rows[0]
            out.append(f"- **{t}**: largest relative change in **{top['key'][0]}** ({_f(top['rel_change'])}); "
                       f"smallest in {rows[-1]['key'][0]} ({_f(rows[-1]['rel_change'])}).")
    out.append("")

    out += ["## Which layers and modules move most", ""]
    for t in trans:
        layers = sorted(_by(agg["layer"], t), key=lambda r: -(r["rel_change"] or 0))[:5]
        kinds = sorted(_by(agg["kind"], t), key=lambda r: -(r["rel_change"] or 0))[:5]
        out.append(f"- **{t}** — top layers by relative change: "
                   + ", ".join(f"{r['key'][0]} ({_f(r['rel_change'])})" for r in layers)
                   + "; top module kinds: " + ", ".join(f"{r['key'][0]} ({_f(r['rel_change'])})" for r in kinds) + ".")
    out.append("")

    if len(cons) >= 2:
        out += ["## How the transitions compare", ""]
        first = next(x for x in agg["model"] if x["transition"] == cons[0])
        for t in cons[1:]:
            r = next(x for x in agg["model"] if x["transition"] == t)
            if first["rel_change"] and r["rel_change"] is not None:
                out.append(f"- {t} moved the weights {_f(r['rel_change'] / first['rel_change'])}× as far as "
                           f"{cons[0]} (relative change {_f(r['rel_change'])} vs {_f(first['rel_change'])}), "
                           f"changing {_f(r['changed_exact'], pct=True)} vs {_f(first['changed_exact'], pct=True)} of entries.")
        for p in agg["delta_cosine_model"]:
            out.append(f"- cos(Δ[{p['t1']}], Δ[{p['t2']}]) = {_f(p['delta_cosine'])} over all tensors "
                       "(0 = unrelated directions, < 0 = the later stage partly undoes the earlier one).")
        out.append("")

    notes = []
    if s["added_rows"]:
        for a in s["added_rows"]:
            notes.append(f"- `{a['tensor']}` {a['transition']}: {a['rows_a']} → {a['rows_b']} rows; "
                         f"{a['added_rows']} added rows (Frobenius norm {_f(a['added_rows_norm'])}) are excluded from ΔW.")
    tied = [n for n, v in s["tied_embeddings"].items() if v]
    if tied:
        notes.append(f"- Tied input/output embeddings (no separate `lm_head`) in: {', '.join(tied)}.")
        if len(tied) < len(s["tied_embeddings"]):
            notes.append(f"- The head of {', '.join(tied)} is its input embedding: its `lm_head` is compared with the "
                         "untied checkpoints' as that embedding matrix.")
    for name, where in list(s["missing_tensors"].items())[:20]:
        notes.append(f"- `{name}` is missing in {', '.join(where)}; compared only where present.")
    for nf in s["nonfinite"][:20]:
        notes.append(f"- `{nf['tensor']}` {nf['transition']}: {nf['entries']} NaN/Inf entries left out of every metric.")
    if s["skipped_tensors"]:
        notes.append(f"- {len(s['skipped_tensors'])} non-float tensors skipped.")
    if notes:
        out += ["## Alignment notes", "", *notes, ""]

    out += ["## Reading these numbers", "",
            "- `changed (exact)` compares stored values bit for bit. In bfloat16 an update smaller than half a unit "
            "in the last place of a weight leaves it unchanged, and that unit grows with |W|: small updates register "
            "on small weights first. Low changed shares and a `changed_magnitude_ratio` below 1 can come from this "
            "rounding as well as from the optimiser.",
            "- `(null …)` beside a value: what an update with no structure would give — i.i.d. Gaussian noise with the "
            "same ‖ΔW‖_F per tensor, added to W_A and stored in B's dtype (changed shares, magnitude ratio and principal "
            "overlap simulated on a seeded sample of rows; stable rank and rank fraction derived). An observed value "
            "near its null says nothing about the training beyond its size: a pure dtype cast scores at or within its null.",
            "- `principal overlap` = (share of changed entries that fall in the top 5% of |rank-k W_A|) / 5%: "
            "1 is chance, below 1 the update avoids principal weights.",
            "- Spectral values of a group are parameter-weighted means over its matrices; element-wise values are "
            "exact parameter-weighted ratios.",
            *(["- `topk` spectra come from a randomized block-Krylov SVD with an extrapolated correction; each tensor's "
               "σ₁, stable rank and top-k energy carry an error estimate in `weights/tensors.csv` (`*_err`; typically "
               "≤ 1% on noise-like spectra, ~0 on decaying ones). `full` is exact."] if spectral == "topk" else []),
            "", "Figures: `weights/heatmap_rel_change.png`, `weights/heatmap_changed_exact.png`, "
            "`weights/layers_rel_change.png`, `weights/spectral.png`, `sft_vs_rlvr_comparison.png`; per-tensor values "
            "in `weights/tensors.csv`.", ""]
    return "\n".join(out)
