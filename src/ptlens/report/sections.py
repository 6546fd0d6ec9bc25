"""The report's sections as data: each section's tables and notes from the stored results, and the number format.

:mod:`ptlens.report.build` puts these with the figures into report.html and report.md; the templates only lay
them out. One formatter (:func:`fmt`) for both files, so that a number prints alike in each.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ptlens.report.stages import Transitions
from ptlens.report.trajectory import trajectories
from ptlens.report.verdicts import (CLEAR, HYPOTHESES, MINIMAL, NOT_MEASURED, UNEXPECTED, Criteria, Verdict,
                                    behaviour_pair, efficiency_rows, pass_at_k_crossings)
from ptlens.results import registry as REG
from ptlens.results.rows import Estimate, PairComparison, estimates, largest
from ptlens.results.store import BehaviorResults, WeightSummary

LABEL_CSS = {CLEAR: "clear", MINIMAL: "minimal", UNEXPECTED: "unexpected", NOT_MEASURED: "nm"}


# ---------------------------------------------------------------- formatting


def fmt(v, digits: int = 3) -> str:
    """A table cell: – for missing, yes/no, integers with thousands separators, measured numbers as :func:`REG.fmt_number`."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    v = float(v)
    return "0" if v == 0 else REG.fmt_number(v, digits)


def pct(v) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}%"


def interval(iv) -> str:
    return "" if not iv else f"[{fmt(iv[0])}, {fmt(iv[1])}]"


def est(e: Estimate | None) -> str:
    if not e or e.value is None:
        return "–"
    return fmt(e.value) + (f" [{fmt(e.lo)}, {fmt(e.hi)}]" if e.interval else "")


def est_cell(e: Estimate | None) -> str | tuple[str, str]:
    """A table cell with the value and, below it, its interval: ("0.5", "[0.4, 0.6]")."""
    if not e or e.value is None:
        return "–"
    p = f" p = {fmt(e.p)}" if e.p is not None else ""
    return (fmt(e.value), f"[{fmt(e.lo)}, {fmt(e.hi)}]{p}") if e.interval else fmt(e.value)


def interval_level(results: BehaviorResults | None, criteria: Criteria = Criteria()) -> str:
    """The level of the behaviour intervals as the run stored it ("95%"), else the criteria's."""
    lv = results.level if results else None
    return f"{100 * (lv or criteria.level):g}%"


def run_criteria(criteria: Criteria, results: BehaviorResults | None) -> Criteria:
    """The criteria with the interval level the behaviour run stored, so their text states it."""
    lv = results.level if results else None
    return replace(criteria, level=lv) if lv is not None and lv != criteria.level else criteria


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def table(tid: str, caption: str, header: list[str], rows: list[list[str]], note: str = "") -> dict:
    return {"id": tid, "caption": caption, "header": header, "rows": rows, "note": note}


# ---------------------------------------------------------------- sections


def weights_section(s: WeightSummary) -> dict:
    tr = Transitions(s)
    k = (s.settings or {}).get("k", 16)
    trans = [t.name for t in s.transition_refs()]
    kinds = {t.name: t.kind for t in s.transition_refs()}
    shown = REG.metrics(table=REG.REPORT)  # the registry says which metrics this table shows, and how
    rows = []
    for t in trans:
        r = tr.row("model", t)
        if r is None:
            continue
        rows.append([t, kinds[t], *[(pct if m.pct else fmt)(r.values.get(m.aggregate_key(k))) for m in shown]])
    model = table("tbl-weights-model", "Whole model, parameter-weighted over all tensors",
                  ["transition", "kind", *[m.header(k) for m in shown]], rows,
                  "Spectral columns are parameter-weighted means over 2-D matrices; – where not computed.")
    groups = sorted({r.key[0] for r in s.rows("group")})
    grows = [[t, *[fmt(tr.value("group", t, "rel_change", [g])) for g in groups],
              *[pct(tr.value("group", t, "changed_exact", [g])) for g in groups]] for t in trans]
    group = table("tbl-weights-group", "Module groups: relative change and share of entries changed",
                  ["transition", *[f"{g} rel." for g in groups], *[f"{g} changed" for g in groups]], grows)
    top = []
    for t in trans:
        layers, kinds_ = largest(tr.rows("layer", t), "rel_change", 3), largest(tr.rows("kind", t), "rel_change", 3)
        top.append([t, ", ".join(f"{r.key[0]} ({fmt(r.values.get('rel_change'))})" for r in layers),
                    ", ".join(f"{r.key[0]} ({fmt(r.values.get('rel_change'))})" for r in kinds_)])
    where = table("tbl-weights-where", "Where the change is largest (by relative change)",
                  ["transition", "top layers", "top module kinds"], top)
    notes = []
    for a in s.added_rows:
        notes.append(f"{a['tensor']} {a['transition']}: {a['rows_a']} → {a['rows_b']} rows; {a['added_rows']} added "
                     "rows excluded from ΔW.")
    tied = [n for n, v in s.tied_embeddings.items() if v]
    if tied:
        notes.append(f"Tied input/output embeddings (no separate LM head) in: {', '.join(tied)}.")
    for nf in s.nonfinite[:20]:
        notes.append(f"{nf['tensor']} {nf['transition']}: {nf['entries']} NaN/Inf entries left out of every metric.")
    missing = s.missing_tensors
    if missing:
        notes.append(f"{len(missing)} tensors missing in some checkpoints; compared only where present.")
    return {"tables": [model, group, where], "notes": notes}


def behaviour_section(r: BehaviorResults, extra: dict, skipped: dict | None = None) -> dict:
    models = r.models
    ks = r.ks
    kmax = max(ks) if ks else None
    cols = [(m.column(kmax), m.header(kmax)) for m in REG.behaviour_metrics(REG.REPORT)
            if kmax or "{k}" not in m.name]  # which metrics, in which order: the registry
    rows = [[name, *[est_cell(m.metrics.get(key)) for key, _ in cols]] for name, m in models.items()]
    n_prob = next((m.n_problems for m in models.values()), None)
    head = r.headline_problems or {}
    scope = (f" ({head.get('excluded_tag')} problems left out: {fmt(head['of'] - head['n'])}; see accuracy by tag)"
             if head.get("excluded_tag") else "")
    level = interval_level(r)
    per = table("tbl-behaviour", f"Per model, with {level} bootstrap intervals over problems",
                ["model", *[c for _, c in cols]], rows,
                f"{fmt(n_prob)} problems{scope}; {fmt((r.settings or {}).get('n_samples'))} samples per problem.")
    diffs = []
    pairs = [(c.a, c.b, c.difference, "stored") for c in r.consecutive]
    pairs += [(a, b, estimates(d), "from samples") for (a, b), d in sorted(extra.items())]
    dcols = ["accuracy", *([f"pass@{kmax}"] if kmax else []), "distinct_answers", "answer_confidence", "distinct_4",
             "token_entropy", "length_mean", "ece"]
    for a, b, d, src in pairs:
        diffs.append([f"{b} − {a}", src, *[est_cell(d.get(c)) for c in dcols]])
    diff = table("tbl-behaviour-diff", f"Paired differences (later − earlier), {level} paired bootstrap intervals, sign-flip p",
                 ["difference", "source", *dcols], diffs)
    solved = [[f"{c.a} → {c.b}", *[fmt(c.solved_sets.get(k)) for k in ("both", "a_only", "b_only", "neither")]]
              for c in r.consecutive]
    solved_t = table("tbl-solved", "Solved sets (a problem is solved with ≥ 1 correct sample)",
                     ["pair", "both", "earlier only (lost)", "later only (gained)", "neither"], solved)
    names = list(models)
    cp = r.cross("cross_ppl")
    cross = table("tbl-cross-ppl", "Cross-model perplexity: row = whose responses, column = scoring model",
                  ["responses of ↓ / scored by →", *names],
                  [[a, *[est_cell((cp.get(a) or {}).get(b)) for b in names]] for a in names if a in cp])
    crossings = []
    pair = behaviour_pair(r)
    if pair:
        ks_cross = pass_at_k_crossings(r, pair[0], pair[1])
        crossings.append(f"pass@k of {pair[1]} vs {pair[0]}: " + (
            f"the curves cross at k = {', '.join(map(str, ks_cross))}" if ks_cross else
            "the curves do not cross at the measured k"))
    crossings += [f"paired differences of {b} − {a} not computed from the samples: {why}" for (a, b), why in
                  sorted((skipped or {}).items())]
    for model, by in sorted((r.metrics.get("unscorable") or {}).items()):  # ids a later stage added: not scorable by earlier ones
        for scorer, c in sorted(by.items()):
            crossings.append(f"{scorer} could not score {c['samples']} response(s) of {model} ({c['tokens']} token(s) "
                             f"beyond its vocabulary): left out of cross-model perplexity and KL under {scorer}.")
    return {"tables": [per, *by_tag_table(r), diff, solved_t, cross, *grading_table(r)], "notes": crossings}


def grading_table(r: BehaviorResults) -> list[dict]:
    """Strict accuracy beside lm-eval's flexible-extract, and the grades math-verify could not decide (fallbacks)."""
    counts = (r.metrics.get("grading") or {}).get("models") or {}
    models = r.models
    if not counts and not any(m.accuracy_flexible for m in models.values()):
        return []  # results written before the grader recorded them
    rows = []
    for name, m in models.items():
        c = counts.get(name) or {}
        rows.append([name, est_cell(m.metrics.get("accuracy")), est_cell(m.accuracy_flexible),
                     fmt(c.get("no_answer")), fmt(c.get("fallback_timeout")), fmt(c.get("fallback_error"))])
    return [table("tbl-grading", "Grading: strict (stated answer) vs flexible (last number) accuracy, and fallbacks",
                  ["model", "accuracy (strict)", "accuracy (flexible)", "no stated answer", "math-verify timeouts",
                   "math-verify errors"], rows,
                  "Strict is the headline (docs/GRADING.md); flexible is lm-evaluation-harness's gsm8k flexible-extract, "
                  "for comparison with papers that report it. A timeout or error falls back to comparing plain numbers; "
                  "counts are over all samples.")]


def by_tag_table(r: BehaviorResults) -> list[dict]:
    """Accuracy per problem tag (in-distribution vs held-out, per level) beside the headline, with paired differences."""
    by_tag = r.by_tag or {}
    if len(by_tag) < 2:
        return []
    names = r.names
    first = next(iter(by_tag.values()))
    pairs = [(c.a, c.b) for c in map(PairComparison.from_dict, first.get("consecutive") or [])]
    rows = []
    for tag, t in by_tag.items():
        diffs = {(c.a, c.b): c.difference.get("accuracy")
                 for c in map(PairComparison.from_dict, t.get("consecutive") or [])}
        models = t.get("models") or {}
        rows.append([tag, fmt(t.get("n_problems")),
                     *[est_cell(Estimate.from_dict((models.get(n) or {}).get("accuracy"))) for n in names],
                     *[est_cell(diffs.get(p)) for p in pairs]])
    return [table("tbl-behaviour-by-tag", f"Accuracy by problem tag, with {interval_level(r)} bootstrap intervals over each "
                  "tag's problems",
                  ["tag", "problems", *names, *[f"{b} − {a}" for a, b in pairs]], rows,
                  "A problem counts under each of its tags; differences are paired (same resamples).")]


def efficiency_section(s: WeightSummary | None, r: BehaviorResults | None) -> dict:
    rows = efficiency_rows(s)
    eff = table("tbl-efficiency", "Weight change per training item (stage facts)",
                ["stage", "transition", "rel. change", "items", "epochs", "per item", "per item processed",
                 "learning rate"],
                [[x.stage, x.transition or "not stored", fmt(x.rel_change) if x.rel_change is not None else
                  (f"≤ {fmt(x.upper_bound)} (path length)" if x.upper_bound is not None else "–"),
                  f"{x.items:,} {x.item_field}" if x.items else "not in facts", fmt(x.epochs), fmt(x.per_item),
                  fmt(x.per_pass), fmt(x.learning_rate)] for x in rows],
                "Caveat: the stages used different data, objectives and learning rates; weight change per item is a "
                "descriptive rate, not learning per item.")
    trajs = trajectories(s, r)
    ttabs = []
    for t in trajs:
        ttabs.append(table(f"tbl-trajectory-{slug(t.stage)}", f"Trajectory of {t.stage} (from {t.start})",
                           ["checkpoint", t.x_label, "distance from start", "path length", "step rel. change",
                            "step changed (exact)", "accuracy"],
                           [[p.name, fmt(p.x), fmt(p.distance) + ("" if p.distance is None or p.distance_exact_from
                                                                   is None else " (exact)"),
                             fmt(p.path_length), fmt(p.step_rel_change), pct(p.step_changed_exact),
                             est(p.behaviour.get("accuracy"))] for p in t.points]))
    return {"tables": [eff, *ttabs], "trajectories": trajs, "rows": rows}


def transfer_section(s: WeightSummary) -> dict:
    tr = Transitions(s)
    cps = s.checkpoints
    rows = []
    for j in range(1, len(cps)):
        step = tr.name(j - 1, j)
        cum = tr.name(0, j)
        rows.append([cps[j].get("name", str(j)), step or "–", fmt(tr.value("model", step, "rel_change")),
                     cum or "–", fmt(tr.value("model", cum, "rel_change")), pct(tr.value("model", cum, "changed_exact"))])
    acc = table("tbl-transfer", "Cumulative change from the first checkpoint",
                ["checkpoint", "step", "step rel. change", "from first", "cumulative rel. change",
                 "cumulative changed (exact)"], rows)
    cos = [[p.t1, p.t2, fmt(p.delta_cosine)] for p in s.cosines("delta_cosine_model")]
    groups = {}
    for p in s.cosines("delta_cosine_group"):
        groups.setdefault((p.t1, p.t2), {})[p.key[0]] = p.delta_cosine
    gnames = sorted({g for v in groups.values() for g in v})
    for row in cos:
        row += [fmt(groups.get((row[0], row[1]), {}).get(g)) for g in gnames]
    cos_t = table("tbl-transfer-cos", "Cosine between updates: > 0 continues, < 0 partly undoes, ≈ 0 unrelated",
                  ["earlier", "later", "all tensors", *gnames], cos)
    return {"tables": [acc, cos_t]}


def verdict_view(v: Verdict, figures: dict) -> dict:
    fig_key = None
    if v.figure:
        fig_key = next((k for k, f in figures.items() if f["path"] == v.figure or k == v.figure), None)
    return {
        "question": v.question, "anchor": f"q-{slug(v.question)}", "label": v.label, "css": LABEL_CSS.get(v.label, "minimal"),
        "criterion": v.criterion, "summary": v.summary, "comparison": v.comparison,
        "figure": figures[fig_key]["anchor"] if fig_key else None,
        "figure_title": figures[fig_key]["title"] if fig_key else None,
        "table": v.table if v.label != NOT_MEASURED else None,
        "checks": [{"name": c.name, "outcome": c.outcome, "css": slug(c.outcome), "rule": c.rule,
                    "hypothesis": HYPOTHESES[c.hypothesis] if c.hypothesis else None,
                    "evidence": [(e.metric, fmt(e.value), interval(e.interval)) for e in c.evidence]}
                   for c in v.checks],
    }
