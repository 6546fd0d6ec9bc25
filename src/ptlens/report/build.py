"""``build_report``: report.html, report.md and report/verdicts.json from stored results alone.

Reads ``weights/summary.json``, ``model_comparison_results.json`` and ``behavior/samples.jsonl``
(each optional, at least one present), draws the report's own figures into ``report/``, and
writes every file atomically. Nothing depends on the clock or the folder's location, so a
rebuild from the same stored results writes the same bytes.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import asdict
from pathlib import Path

from ptlens.io import write_json, write_text
from ptlens.report import methods as M
from ptlens.report.browser import build_browser
from ptlens.report.decision import decide, decision_inputs, decision_rows
from ptlens.report.inputs import RESULTS, SAMPLES, SUMMARY, ReportInputs, load_inputs
from ptlens.report.sections import (behaviour_section, efficiency_section, fmt, interval_level, run_criteria,
                                    slug, transfer_section, verdict_view, weights_section)
from ptlens.report.stages import stages_of
from ptlens.report.verdicts import HYPOTHESES, QUESTION_KEYS, Criteria, Verdict, all_verdicts, behaviour_pair, has_test
from ptlens.results import files as FILES

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


# ---------------------------------------------------------------- figures


def _figures(inp: ReportInputs, criteria: Criteria, eff_rows, trajs) -> dict[str, dict]:
    """Key → {path (relative), title, caption, anchor}; only figures whose file exists."""
    from ptlens.report import figures as F

    files = FILES
    out = inp.out_dir
    found: dict[str, str] = {}
    s, r = inp.weights, inp.behavior
    if s is not None:
        listed = s.figures or {}
        if not listed or any(not (out / p).is_file() for p in listed.values()):
            listed = _redraw_weights(inp)
        for key in WEIGHT_FIGURE_ORDER:
            if key in listed:
                found[key] = listed[key]
    if r is not None:
        listed_b = list(r.figures or [])
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

        return {k: str(Path(p).relative_to(inp.out_dir)) for k, p in weight_figures(inp.weights.to_dict(), inp.out_dir).items()}
    except (KeyError, IndexError, TypeError, ValueError):
        return {}


def _redraw_behaviour(inp: ReportInputs) -> list[str]:
    """The behaviour figures, redrawn from the stored results and samples (the figure writers only: no sampling
    driver is imported)."""
    try:
        from ptlens.behavior.figures import write_figures
        from ptlens.results.store import SampleRecord

        recs = [SampleRecord.from_dict(x) for x in inp.samples or []]
        paths = write_figures(inp.behavior.to_dict(), recs, inp.out_dir / FILES.BEHAVIOR_DIR)
        return [str(p.relative_to(inp.out_dir)) for p in paths]
    except Exception:  # noqa: BLE001 - a figure we cannot redraw is left out; the numbers stay
        return []


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _reproducibility(inp: ReportInputs) -> dict:
    s, r = inp.weights, inp.behavior
    commands = []
    if s and s.command:
        commands.append(("weights", shlex.join(str(x) for x in s.command)))
    if r and r.command:
        commands.append(("behaviour", shlex.join(str(x) for x in r.command)))
    commands.append(("rebuild this report", "ptlens report <this folder>"))
    sv, rv = (s.versions if s else None) or {}, (r.versions if r else None) or {}
    libs = sorted(set(sv) | set(rv))
    versions = [[n, sv.get(n, "–"), rv.get(n, "–")] for n in libs]
    lin = []
    for c in inp.lineage.get("checkpoints") or []:
        lin.append([c.get("name") or c.get("label") or "", c.get("label") or "", c.get("spec") or "",
                    c.get("repo_id") or "local", c.get("revision") or "–", c.get("resolved_revision") or "–"])
    seeds = []
    bs = (r.settings if r else None) or {}
    if bs:
        seeds.append(f"behaviour seed {bs.get('seed')}: problem selection, sampling (each batch's seed is derived from "
                     "it, the model name and the batch index, and stored per sample in behavior/samples.jsonl), "
                     "bootstrap resamples")
    boot = (r.metrics.get("bootstrap") if r else None) or {}
    if boot:
        seeds.append(f"bootstrap: {boot.get('resamples')} resamples of {boot.get('unit', 'problem')}s, seed "
                     f"{boot.get('seed')}, level {boot.get('level')}")
    if s:
        seeds.append("weight scan: randomized SVD seeded per tensor by crc32(tensor name); every other weight metric "
                     "is exact")
    return {"commands": commands, "versions": versions, "lineage": lin, "seeds": seeds,
            "inputs": sorted(inp.hashes.items()), "created": r.created if r else None}


def _methods(inp: ReportInputs, criteria: Criteria) -> dict:
    settings = []
    s, r = inp.weights, inp.behavior
    for k, v in ((s.settings if s else None) or {}).items():
        settings.append(["weights", k, json.dumps(v)])
    for k, v in ((r.settings if r else None) or {}).items():
        settings.append(["behaviour", k, json.dumps(v)])
    prompts = []
    for m in (r.models_info if r else None) or []:
        prompts.append([m.get("name", ""), m.get("prompt_format") or "–", m.get("instruction") or "none",
                        ", ".join(m.get("stop_strings") or []) or "–"])
    return {"weights": M.weight_definitions(), "behaviour": M.behaviour_definitions(interval_level(r, criteria)),
            "efficiency": M.EFFICIENCY_DEFINITIONS, "settings": settings, "criteria": M.decision_text(criteria, r, s),
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
    if inp.weights and inp.behavior:
        wn = [c.get("name") for c in inp.weights.checkpoints]
        bn = inp.behavior.names
        if wn != bn:
            banners.append(f"The weight results cover {' → '.join(map(str, wn))} but the behaviour results cover "
                           f"{' → '.join(map(str, bn))}; each section shows its own models.")
    return rows, banners


def build_context(inp: ReportInputs, criteria: Criteria = Criteria(), max_problems: int = 40,
                  samples_per_model: int = 2, embed: bool = True) -> dict:
    """Everything the page and the markdown show; figures are drawn (into ``report/``) as a side effect."""
    s, r = inp.weights, inp.behavior
    criteria = run_criteria(criteria, r)
    extra, skipped = {}, {}
    pair = behaviour_pair(r)
    if r and inp.samples and pair and not has_test(r, pair[0], pair[1]):
        from ptlens.report.pairs import pair_differences_why

        extra, skipped = pair_differences_why(r, inp.samples, [pair[:2]])
    verdicts = all_verdicts(s, r, criteria, extra)
    mechanism = _mechanism(inp, embed)
    decision = decide(verdicts, decision_inputs(s, r, mechanism, criteria), criteria)
    eff = efficiency_section(s, r) if s else None
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
        "verdicts": [verdict_view(v, figures) for v in verdicts],
        "verdict": {QUESTION_KEYS[v.question]: verdict_view(v, figures) for v in verdicts},
        "verdict_objects": verdicts,
        "weights": weights_section(s) if s else None,
        "behaviour": behaviour_section(r, extra, skipped) if r else None,
        "efficiency": eff,
        "transfer": transfer_section(s) if s else None,
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
    write_json(out / VERDICTS_FILE, verdicts_json(ctx["verdict_objects"], run_criteria(criteria, inp.behavior),
                                                  ctx["decision"]))
    return {"html": out / HTML_FILE, "markdown": out / MD_FILE, "verdicts_json": out / VERDICTS_FILE,
            "verdicts": ctx["verdict_objects"], "decision": ctx["decision"],
            "figures": {k: f["path"] for k, f in ctx["figures"].items()}}
