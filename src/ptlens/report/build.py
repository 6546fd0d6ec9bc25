"""``build_report``: report.html, report.md and report/verdicts.json from stored results alone.

Reads ``weights/summary.json``, ``model_comparison_results.json`` and ``behavior/samples.jsonl``
(each optional, at least one present), draws the report's own figures into ``report/``, and
writes every file atomically. Nothing depends on the clock or the folder's location, so a
rebuild from the same stored results writes the same bytes.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
from dataclasses import asdict, replace
from pathlib import Path

from ptlens.io import write_json, write_text
from ptlens.report import methods as M
from ptlens.report.browser import build_browser
from ptlens.report.decision import decide, decision_inputs, decision_rows
from ptlens.report.inputs import RESULTS, SAMPLES, SUMMARY, ReportInputs, load_inputs
from ptlens.report.stages import Transitions, stages_of
from ptlens.report.trajectory import trajectories
from ptlens.report.verdicts import (CLEAR, HYPOTHESES, MINIMAL, NOT_MEASURED, QUESTION_KEYS, UNEXPECTED, Criteria,
                                    Verdict, all_verdicts, behaviour_pair, efficiency_rows, has_test,
                                    pass_at_k_crossings)
from ptlens.results import files as FILES
from ptlens.results import registry as REG

HTML_FILE, MD_FILE, VERDICTS_FILE = FILES.REPORT_HTML, FILES.REPORT_MD, FILES.VERDICTS_JSON

FIGURE_TEXT = {
    "overview": ("Weight changes per transition (sft_vs_rlvr_comparison.png)",
                 "How far each module group moved (log scale), the share of entries changed, where in depth the change "
                 "sits, and whether stages push the weights the same way."),
    "heatmap_rel_change": ("Relative change by layer and module", "‖ΔW‖_F / ‖W_A‖_F per layer × module kind, one "
                           "panel per transition, one colour scale (log)."),
    "heatmap_changed_exact": ("Share of entries changed by layer and module", "Bit-exact changed share per layer × "
                              "module kind."),
    "layers_rel_change": ("Relative change per layer, by module group", "Parameter-weighted per layer and group."),
    "layers_changed_exact": ("Changed share per layer, by module group", "Bit-exact changed share per layer and group."),
    "spectral": ("Spectral structure of the updates", "Stable rank, top-k energy, principal-weight overlap (1 = chance) "
                 "and top-k subspace angle per layer."),
    "pass_at_k": ("pass@k and maj@k", "Solid: pass@k with its {level} band; dashed: maj@k; where curves cross, the "
                  "ranking of the models depends on the sampling budget."),
    "accuracy_histogram": ("Per-problem accuracy", "How many problems each model solves never, sometimes, always."),
    "entropy_length": ("Token entropy and length", "Distributions over responses of mean token entropy (nats) and "
                       "length (tokens)."),
    "calibration": ("Calibration", "Accuracy of the modal answer against answer confidence; the diagonal is perfect "
                    "calibration."),
    "cross_ppl_heatmap": ("Cross-model perplexity", "Row: whose responses; column: which model scores them. Low values "
                          "off the diagonal: those answers were already likely under the scoring model."),
    "sample_efficiency": ("Weight change per training item", "Stage change and change per distinct training item, "
                          "from the stage facts; the stages used different data."),
    "convergence": ("Convergence along trajectories", "Distance (exact) and path length (upper bound) from the stage "
                    "start, change per step, and behaviour along the trajectory."),
    "transfer": ("How changes accumulate", "Distance from the first checkpoint against the sum of steps; cosines "
                 "between transitions' updates (dotted: ±threshold); accuracy along the lineage when measured."),
}
WEIGHT_FIGURE_ORDER = ("overview", "heatmap_rel_change", "heatmap_changed_exact", "layers_rel_change",
                       "layers_changed_exact", "spectral")
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


def est(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "–"
    lo, hi = e.get("lo"), e.get("hi")
    return fmt(e["value"]) + (f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else "")


def est_cell(e: dict | None) -> str | tuple[str, str]:
    """A table cell with the value and, below it, its interval: ("0.5", "[0.4, 0.6]")."""
    if not e or e.get("value") is None:
        return "–"
    lo, hi = e.get("lo"), e.get("hi")
    p = f" p = {fmt(e['p'])}" if isinstance(e.get("p"), (int, float)) else ""
    return (fmt(e["value"]), f"[{fmt(lo)}, {fmt(hi)}]{p}") if lo is not None and hi is not None else fmt(e["value"])


def interval_level(results: dict | None, criteria: Criteria = Criteria()) -> str:
    """The level of the behaviour intervals as the run stored it ("95%"), else the criteria's."""
    lv = ((results or {}).get("bootstrap") or {}).get("level")
    lv = lv if isinstance(lv, (int, float)) and 0 < lv < 1 else criteria.level
    return f"{100 * lv:g}%"


def run_criteria(criteria: Criteria, results: dict | None) -> Criteria:
    """The criteria with the interval level the behaviour run stored, so their text states it."""
    lv = ((results or {}).get("bootstrap") or {}).get("level")
    return replace(criteria, level=lv) if isinstance(lv, float) and 0 < lv < 1 and lv != criteria.level else criteria


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def table(tid: str, caption: str, header: list[str], rows: list[list[str]], note: str = "") -> dict:
    return {"id": tid, "caption": caption, "header": header, "rows": rows, "note": note}


# ---------------------------------------------------------------- sections


def _weights_section(s: dict) -> dict:
    tr = Transitions(s)
    k = (s.get("settings") or {}).get("k", 16)
    trans = [t["name"] for t in s.get("transitions") or []]
    kinds = {t["name"]: t.get("kind", "") for t in s.get("transitions") or []}
    shown = REG.metrics(table=REG.REPORT)  # the registry says which metrics this table shows, and how
    rows = []
    for t in trans:
        r = tr.row("model", t)
        if r is None:
            continue
        rows.append([t, kinds[t], *[(pct if m.pct else fmt)(r.get(m.aggregate_key(k))) for m in shown]])
    model = table("tbl-weights-model", "Whole model, parameter-weighted over all tensors",
                  ["transition", "kind", *[m.header(k) for m in shown]], rows,
                  "Spectral columns are parameter-weighted means over 2-D matrices; – where not computed.")
    groups = sorted({r["key"][0] for r in (s.get("aggregates") or {}).get("group") or []})
    grows = [[t, *[fmt(tr.value("group", t, "rel_change", [g])) for g in groups],
              *[pct(tr.value("group", t, "changed_exact", [g])) for g in groups]] for t in trans]
    group = table("tbl-weights-group", "Module groups: relative change and share of entries changed",
                  ["transition", *[f"{g} rel." for g in groups], *[f"{g} changed" for g in groups]], grows)
    top = []
    for t in trans:
        layers = sorted(tr.rows("layer", t), key=lambda r: -(r.get("rel_change") or 0))[:3]
        kinds_ = sorted(tr.rows("kind", t), key=lambda r: -(r.get("rel_change") or 0))[:3]
        top.append([t, ", ".join(f"{r['key'][0]} ({fmt(r.get('rel_change'))})" for r in layers),
                    ", ".join(f"{r['key'][0]} ({fmt(r.get('rel_change'))})" for r in kinds_)])
    where = table("tbl-weights-where", "Where the change is largest (by relative change)",
                  ["transition", "top layers", "top module kinds"], top)
    notes = []
    for a in s.get("added_rows") or []:
        notes.append(f"{a['tensor']} {a['transition']}: {a['rows_a']} → {a['rows_b']} rows; {a['added_rows']} added "
                     "rows excluded from ΔW.")
    tied = [n for n, v in (s.get("tied_embeddings") or {}).items() if v]
    if tied:
        notes.append(f"Tied input/output embeddings (no separate LM head) in: {', '.join(tied)}.")
    for nf in (s.get("nonfinite") or [])[:20]:
        notes.append(f"{nf['tensor']} {nf['transition']}: {nf['entries']} NaN/Inf entries left out of every metric.")
    missing = s.get("missing_tensors") or {}
    if missing:
        notes.append(f"{len(missing)} tensors missing in some checkpoints; compared only where present.")
    return {"tables": [model, group, where], "notes": notes}


def _behaviour_section(r: dict, extra: dict, skipped: dict | None = None) -> dict:
    models = r.get("models") or {}
    ks = r.get("ks") or []
    kmax = max(ks) if ks else None
    cols = [(m.column(kmax), m.header(kmax)) for m in REG.behaviour_metrics(REG.REPORT)
            if kmax or "{k}" not in m.name]  # which metrics, in which order: the registry
    rows = [[name, *[est_cell((m.get("metrics") or {}).get(key)) for key, _ in cols]] for name, m in models.items()]
    n_prob = next((m.get("n_problems") for m in models.values()), None)
    head = r.get("headline_problems") or {}
    scope = (f" ({head.get('excluded_tag')} problems left out: {fmt(head['of'] - head['n'])}; see accuracy by tag)"
             if head.get("excluded_tag") else "")
    level = interval_level(r)
    per = table("tbl-behaviour", f"Per model, with {level} bootstrap intervals over problems",
                ["model", *[c for _, c in cols]], rows,
                f"{fmt(n_prob)} problems{scope}; {fmt((r.get('settings') or {}).get('n_samples'))} samples per problem.")
    diffs = []
    pairs = [(c.get("a"), c.get("b"), c.get("difference") or {}, "stored") for c in r.get("consecutive") or []]
    pairs += [(a, b, d, "from samples") for (a, b), d in sorted(extra.items())]
    dcols = ["accuracy", *([f"pass@{kmax}"] if kmax else []), "distinct_answers", "answer_confidence", "distinct_4",
             "token_entropy", "length_mean", "ece"]
    for a, b, d, src in pairs:
        diffs.append([f"{b} − {a}", src, *[est_cell(d.get(c)) for c in dcols]])
    diff = table("tbl-behaviour-diff", f"Paired differences (later − earlier), {level} paired bootstrap intervals, sign-flip p",
                 ["difference", "source", *dcols], diffs)
    solved = [[f"{c.get('a')} → {c.get('b')}", *[fmt((c.get("solved_sets") or {}).get(k)) for k in
                                                   ("both", "a_only", "b_only", "neither")]]
              for c in r.get("consecutive") or []]
    solved_t = table("tbl-solved", "Solved sets (a problem is solved with ≥ 1 correct sample)",
                     ["pair", "both", "earlier only (lost)", "later only (gained)", "neither"], solved)
    names = list(models)
    cp = r.get("cross_ppl") or {}
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
    for model, by in sorted((r.get("unscorable") or {}).items()):  # ids a later stage added: not scorable by earlier ones
        for scorer, c in sorted(by.items()):
            crossings.append(f"{scorer} could not score {c['samples']} response(s) of {model} ({c['tokens']} token(s) "
                             f"beyond its vocabulary): left out of cross-model perplexity and KL under {scorer}.")
    return {"tables": [per, *_by_tag_table(r), diff, solved_t, cross, *_grading_table(r)], "notes": crossings}


def _grading_table(r: dict) -> list[dict]:
    """Strict accuracy beside lm-eval's flexible-extract, and the grades math-verify could not decide (fallbacks)."""
    counts = (r.get("grading") or {}).get("models") or {}
    models = r.get("models") or {}
    if not counts and not any(m.get("accuracy_flexible") for m in models.values()):
        return []  # results written before the grader recorded them
    rows = []
    for name, m in models.items():
        c = counts.get(name) or {}
        rows.append([name, est_cell((m.get("metrics") or {}).get("accuracy")), est_cell(m.get("accuracy_flexible")),
                     fmt(c.get("no_answer")), fmt(c.get("fallback_timeout")), fmt(c.get("fallback_error"))])
    return [table("tbl-grading", "Grading: strict (stated answer) vs flexible (last number) accuracy, and fallbacks",
                  ["model", "accuracy (strict)", "accuracy (flexible)", "no stated answer", "math-verify timeouts",
                   "math-verify errors"], rows,
                  "Strict is the headline (docs/GRADING.md); flexible is lm-evaluation-harness's gsm8k flexible-extract, "
                  "for comparison with papers that report it. A timeout or error falls back to comparing plain numbers; "
                  "counts are over all samples.")]


def _by_tag_table(r: dict) -> list[dict]:
    """Accuracy per problem tag (in-distribution vs held-out, per level) beside the headline, with paired differences."""
    by_tag = r.get("by_tag") or {}
    if len(by_tag) < 2:
        return []
    names = list(r.get("models") or {})
    first = next(iter(by_tag.values()))
    pairs = [(c.get("a"), c.get("b")) for c in first.get("consecutive") or []]
    rows = []
    for tag, t in by_tag.items():
        diffs = {(c.get("a"), c.get("b")): (c.get("difference") or {}).get("accuracy") for c in t.get("consecutive") or []}
        rows.append([tag, fmt(t.get("n_problems")), *[est_cell(((t.get("models") or {}).get(n) or {}).get("accuracy"))
                                                     for n in names], *[est_cell(diffs.get(p)) for p in pairs]])
    return [table("tbl-behaviour-by-tag", f"Accuracy by problem tag, with {interval_level(r)} bootstrap intervals over each "
                  "tag's problems",
                  ["tag", "problems", *names, *[f"{b} − {a}" for a, b in pairs]], rows,
                  "A problem counts under each of its tags; differences are paired (same resamples).")]


def _efficiency_section(s: dict | None, r: dict | None) -> dict:
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


def _transfer_section(s: dict) -> dict:
    tr = Transitions(s)
    cps = (s.get("lineage") or {}).get("checkpoints") or []
    rows = []
    for j in range(1, len(cps)):
        step = tr.name(j - 1, j)
        cum = tr.name(0, j)
        rows.append([cps[j].get("name", str(j)), step or "–", fmt(tr.value("model", step, "rel_change")),
                     cum or "–", fmt(tr.value("model", cum, "rel_change")), pct(tr.value("model", cum, "changed_exact"))])
    acc = table("tbl-transfer", "Cumulative change from the first checkpoint",
                ["checkpoint", "step", "step rel. change", "from first", "cumulative rel. change",
                 "cumulative changed (exact)"], rows)
    cos = [[p.get("t1"), p.get("t2"), fmt(p.get("delta_cosine"))]
           for p in (s.get("aggregates") or {}).get("delta_cosine_model") or []]
    groups = {}
    for p in (s.get("aggregates") or {}).get("delta_cosine_group") or []:
        groups.setdefault((p.get("t1"), p.get("t2")), {})[p["key"][0]] = p.get("delta_cosine")
    gnames = sorted({g for v in groups.values() for g in v})
    for row in cos:
        row += [fmt(groups.get((row[0], row[1]), {}).get(g)) for g in gnames]
    cos_t = table("tbl-transfer-cos", "Cosine between updates: > 0 continues, < 0 partly undoes, ≈ 0 unrelated",
                  ["earlier", "later", "all tensors", *gnames], cos)
    return {"tables": [acc, cos_t]}


def _verdict_view(v: Verdict, figures: dict) -> dict:
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


def _figures(inp: ReportInputs, criteria: Criteria, eff_rows, trajs) -> dict[str, dict]:
    """Key → {path (relative), title, caption, anchor}; only figures whose file exists."""
    from ptlens.report import figures as F

    files = FILES
    out = inp.out_dir
    found: dict[str, str] = {}
    s, r = inp.summary, inp.results
    if s is not None:
        listed = s.get("figures") or {}
        if not listed or any(not (out / p).is_file() for p in listed.values()):
            listed = _redraw_weights(inp)
        for key in WEIGHT_FIGURE_ORDER:
            if key in listed:
                found[key] = listed[key]
    if r is not None:
        listed_b = list(r.get("figures") or [])
        if (not listed_b or any(not (out / p).is_file() for p in listed_b)) and inp.samples:
            listed_b = _redraw_behaviour(inp)
        for p in listed_b:
            found[Path(p).stem] = p
    if s is not None:
        lv = interval_level(r, criteria)
        made = {"sample_efficiency": F.efficiency_figure(eff_rows, out / files.REPORT_FIGURES["sample_efficiency"]),
                "convergence": F.convergence_figure(trajs, out / files.REPORT_FIGURES["convergence"], lv),
                "transfer": F.transfer_figure(s, r, out / files.REPORT_FIGURES["transfer"], criteria.cosine_threshold, lv)}
        for k, p in made.items():
            if p is not None:
                found[k] = str(p.relative_to(out))
    figs = {}
    for key, rel in found.items():
        f = out / rel
        if not f.is_file():
            continue
        title, caption = FIGURE_TEXT.get(key, (key.replace("_", " "), ""))
        caption = caption.replace("{level}", interval_level(r, criteria))
        figs[key] = {"key": key, "path": rel, "title": title, "caption": caption, "anchor": f"fig-{slug(key)}"}
    return figs


def _redraw_weights(inp: ReportInputs) -> dict[str, str]:
    """The scan's figures, redrawn from summary.json when they are missing; {} when the summary cannot carry them."""
    try:
        from ptlens.weights.figures import weight_figures

        return {k: str(Path(p).relative_to(inp.out_dir)) for k, p in weight_figures(inp.summary, inp.out_dir).items()}
    except (KeyError, IndexError, TypeError, ValueError):
        return {}


def _redraw_behaviour(inp: ReportInputs) -> list[str]:
    """The behaviour figures, redrawn from the stored results and samples (the figure writers only: no sampling
    driver is imported)."""
    try:
        from ptlens.behavior.figures import write_figures
        from ptlens.results.store import SampleRecord

        recs = [SampleRecord.from_dict(x) for x in inp.samples or []]
        paths = write_figures(inp.results, recs, inp.out_dir / FILES.BEHAVIOR_DIR)
        return [str(p.relative_to(inp.out_dir)) for p in paths]
    except Exception:  # noqa: BLE001 - a figure we cannot redraw is left out; the numbers stay
        return []


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _reproducibility(inp: ReportInputs) -> dict:
    s, r = inp.summary or {}, inp.results or {}
    commands = []
    if s.get("command"):
        commands.append(("weights", shlex.join(str(x) for x in s["command"])))
    if r.get("command"):
        commands.append(("behaviour", shlex.join(str(x) for x in r["command"])))
    commands.append(("rebuild this report", "ptlens report <this folder>"))
    libs = sorted(set(s.get("versions") or {}) | set(r.get("versions") or {}))
    versions = [[n, (s.get("versions") or {}).get(n, "–"), (r.get("versions") or {}).get(n, "–")] for n in libs]
    lin = []
    for c in inp.lineage.get("checkpoints") or []:
        lin.append([c.get("name") or c.get("label") or "", c.get("label") or "", c.get("spec") or "",
                    c.get("repo_id") or "local", c.get("revision") or "–", c.get("resolved_revision") or "–"])
    seeds = []
    bs = r.get("settings") or {}
    if bs:
        seeds.append(f"behaviour seed {bs.get('seed')}: problem selection, sampling (each batch's seed is derived from "
                     "it, the model name and the batch index, and stored per sample in behavior/samples.jsonl), "
                     "bootstrap resamples")
    boot = r.get("bootstrap") or {}
    if boot:
        seeds.append(f"bootstrap: {boot.get('resamples')} resamples of {boot.get('unit', 'problem')}s, seed "
                     f"{boot.get('seed')}, level {boot.get('level')}")
    if s:
        seeds.append("weight scan: randomized SVD seeded per tensor by crc32(tensor name); every other weight metric "
                     "is exact")
    return {"commands": commands, "versions": versions, "lineage": lin, "seeds": seeds,
            "inputs": sorted(inp.hashes.items()), "created": r.get("created")}


def _methods(inp: ReportInputs, criteria: Criteria) -> dict:
    settings = []
    for k, v in ((inp.summary or {}).get("settings") or {}).items():
        settings.append(["weights", k, json.dumps(v)])
    for k, v in ((inp.results or {}).get("settings") or {}).items():
        settings.append(["behaviour", k, json.dumps(v)])
    prompts = []
    for m in (inp.results or {}).get("models_info") or []:
        prompts.append([m.get("name", ""), m.get("prompt_format") or "–", m.get("instruction") or "none",
                        ", ".join(m.get("stop_strings") or []) or "–"])
    return {"weights": M.weight_definitions(), "behaviour": M.behaviour_definitions(interval_level(inp.results, criteria)), "efficiency": M.EFFICIENCY_DEFINITIONS,
            "settings": settings, "criteria": M.decision_text(criteria, inp.results, inp.summary),
            "criteria_values": asdict(criteria),
            "hypotheses": list(HYPOTHESES.values()), "prompts": prompts}


def _lineage_view(inp: ReportInputs) -> tuple[list[list[str]], list[str]]:
    rows, banners = [], []
    for c in inp.lineage.get("checkpoints") or []:
        f = c.get("facts") or {}
        data = ", ".join(f"{f[k]:,} {k}" for k in ("examples", "pairs", "prompts", "episodes") if isinstance(f.get(k), int))
        rows.append([c.get("name") or "", c.get("repo_id") or c.get("spec") or "", f.get("algorithm") or "–",
                     data or "–", fmt(f.get("learning_rate")) if f.get("learning_rate") else "–", f.get("notes") or ""])
        if re.match(r"ptlens \S+ lab\b", f.get("source") or "") and not banners:
            banners.append("This lineage was trained by ptlens lab: a model of under a million parameters on "
                           "arithmetic. Its post-training is real (TRL SFT, DPO, GRPO), but what it shows about "
                           "the stages says nothing yet about 8B-scale models; run a preset such as tulu3-8b for that.")
    if inp.summary and inp.results:
        wn = [c.get("name") for c in (inp.summary.get("lineage") or {}).get("checkpoints") or []]
        bn = list(inp.results.get("models") or [])
        if wn != bn:
            banners.append(f"The weight results cover {' → '.join(map(str, wn))} but the behaviour results cover "
                           f"{' → '.join(map(str, bn))}; each section shows its own models.")
    return rows, banners


def build_context(inp: ReportInputs, criteria: Criteria = Criteria(), max_problems: int = 40,
                  samples_per_model: int = 2, embed: bool = True) -> dict:
    """Everything the page and the markdown show; figures are drawn (into ``report/``) as a side effect."""
    s, r = inp.summary, inp.results
    criteria = run_criteria(criteria, r)
    extra, skipped = {}, {}
    pair = behaviour_pair(r)
    if r and inp.samples and pair and not has_test(r, pair[0], pair[1]):
        from ptlens.report.pairs import pair_differences_why

        extra, skipped = pair_differences_why(r, inp.samples, [pair[:2]])
    verdicts = all_verdicts(s, r, criteria, extra)
    mechanism = _mechanism(inp, embed)
    decision = decide(verdicts, decision_inputs(s, r, mechanism, criteria), criteria)
    eff = _efficiency_section(s, r) if s else None
    figures = _figures(inp, criteria, eff["rows"] if eff else [], eff["trajectories"] if eff else [])
    if embed:
        for f in figures.values():
            f["src"] = _data_uri(inp.out_dir / f["path"])
    lineage_rows, banners = _lineage_view(inp)
    stages = stages_of(inp.lineage)
    names = [c.get("name") for c in inp.lineage.get("checkpoints") or []]
    preset = inp.lineage.get("preset")
    return {
        "title": "ptlens report: " + " → ".join(n or "?" for n in names),
        "preset": preset,
        "has_weights": s is not None, "has_behaviour": r is not None, "has_samples": bool(inp.samples),
        "banners": banners,
        "lineage": lineage_rows,
        "stages": [st.label for st in stages],
        "verdicts": [_verdict_view(v, figures) for v in verdicts],
        "verdict": {QUESTION_KEYS[v.question]: _verdict_view(v, figures) for v in verdicts},
        "verdict_objects": verdicts,
        "weights": _weights_section(s) if s else None,
        "behaviour": _behaviour_section(r, extra, skipped) if r else None,
        "efficiency": eff,
        "transfer": _transfer_section(s) if s else None,
        "figures": figures,
        "weight_figures": [figures[k] for k in WEIGHT_FIGURE_ORDER if k in figures],
        "behaviour_figures": [f for k, f in figures.items() if k not in WEIGHT_FIGURE_ORDER
                              and k not in ("sample_efficiency", "convergence", "transfer")],
        "browser": build_browser(r, inp.samples, max_problems, samples_per_model),
        "methods": _methods(inp, criteria),
        "repro": _reproducibility(inp),
        "files": {"summary": SUMMARY, "results": RESULTS, "samples": SAMPLES},
        "mechanism": mechanism,
        "decision": decision,
        "decision_rows": decision_rows(decision),
        "level": interval_level(r, criteria),
    }


def _mechanism(inp: ReportInputs, embed: bool) -> dict | None:
    """The Mechanism section's record (ptlens.report.mechanism), None when the folder has no mechanism results."""
    from ptlens.report.mechanism import mechanism_section

    return mechanism_section(inp.out_dir, embed)


def render_html(ctx: dict) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("ptlens.report", "templates"), autoescape=True, trim_blocks=True,
                      lstrip_blocks=True, undefined=StrictUndefined, keep_trailing_newline=True)
    return env.get_template("report.html.j2").render(**ctx)


def verdicts_json(verdicts: list[Verdict], criteria: Criteria, decision=None) -> dict:
    """verdicts.json: the criteria, the hypotheses, every verdict and, under ``decision`` (with its own ``schema``
    version), the overall decision and the inputs it was derived from."""
    out = {"criteria": asdict(criteria), "criteria_text": criteria.text(),
           "hypotheses": {k: asdict(h) for k, h in HYPOTHESES.items()},
           "verdicts": [asdict(v) for v in verdicts]}
    if decision is not None:
        out["decision"] = decision.to_json()
    return out


def build_report(out_dir: str | Path, *, criteria: Criteria = Criteria(), max_problems: int = 40,
                 samples_per_model: int = 2) -> dict:
    """Write report.html, report.md and report/verdicts.json under ``out_dir`` from its stored results.

    Returns ``{"html", "markdown", "verdicts_json", "verdicts", "decision", "figures"}`` (paths, the
    :class:`Verdict` list, the :class:`~ptlens.report.decision.Decision`, and figure paths relative to ``out_dir``). Raises PtlensError when the
    folder holds no results or a results file is unreadable.
    """
    from ptlens.report.markdown import render_markdown

    inp = load_inputs(out_dir)
    ctx = build_context(inp, criteria, max_problems, samples_per_model)
    out = inp.out_dir
    write_text(out / HTML_FILE, render_html(ctx))
    write_text(out / MD_FILE, render_markdown(ctx))
    write_json(out / VERDICTS_FILE, verdicts_json(ctx["verdict_objects"], run_criteria(criteria, inp.results),
                                                  ctx["decision"]))
    return {"html": out / HTML_FILE, "markdown": out / MD_FILE, "verdicts_json": out / VERDICTS_FILE,
            "verdicts": ctx["verdict_objects"], "decision": ctx["decision"],
            "figures": {k: f["path"] for k, f in ctx["figures"].items()}}
