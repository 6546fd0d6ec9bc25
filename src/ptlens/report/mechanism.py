"""The report's "Mechanism" section: a small record from the stored mechanism results, and its Markdown.

:func:`mechanism_record` is pure (summary dict in, record out) and states its criteria;
:func:`mechanism_section` reads ``mechanism/summary.json`` and ``adl.json`` (None when the
folder has none: the section then says "not measured"); :func:`mechanism_markdown` renders
the record for report.md. The HTML partial is ``report/templates/mechanism.html.j2``.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

from ptlens.mechanism.criteria import CARRY_SHARE
from ptlens.results.mechanism import LayerRow, MechanismSummary, TransplantRow, load_mechanism
from ptlens.results import registry as REG

MOVE_THRESHOLD = 1e-3
"""A layer "moves" when the mean relative activation change ‖h_B − h_A‖/‖h_A‖ exceeds this."""

CRITERIA = (
    f"First layer that moves: the shallowest layer (−1 = embeddings) whose mean relative activation change "
    f"‖h_B − h_A‖/‖h_A‖ exceeds {MOVE_THRESHOLD:g}.",
    f"A part carries the change when the transplant A + ΔW[part] removes at least {CARRY_SHARE:.0%} of A's "
    f"per-token KL(p_B ‖ p_A) on B's greedy answers, at the lower end of its one-sided bootstrap interval over "
    f"problems at level 1 − 0.05/m, m = the transition's number of parts (Bonferroni: at most a 5% chance that "
    f"any part of a transition is called a carrier when none removes {CARRY_SHARE:.0%}); "
    f"it carries part of it when the point estimate is at least {CARRY_SHARE / 2:.0%}.",
    "Accuracy shares are shown only when the paired 95% interval of B − A excludes 0 (otherwise there is no "
    "accuracy change to attribute).",
    "Additivity: if the parts acted independently, the recovered shares of one partition sum to 1 and their "
    "accuracy changes to B − A.",
)
FIGURES = {
    "depth_figure": ("Depth profiles of the change", "Per transition against depth: 1 − CKA (0 = the same representation "
                     "up to rotation and scale), mean relative activation change, and the logit-lens KL(p_A ‖ p_B) per "
                     "token. Same inputs through both models."),
    "transplant_figure": ("Delta transplants", "For each part, the share of A's KL distance to B (on B's greedy answers) "
                          "that A + ΔW[part] removes (bars, 95% interval), the part's share of ‖ΔW‖² (diamonds) and of "
                          "the accuracy change (circles). 1 = the part alone turns A into B."),
}


def _f(v, digits: int = 3) -> str:
    """A stored number (a CSV cell or a JSON value) printed as every other section prints it (:func:`REG.fmt_number`)."""
    if v is None or v == "" or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    v = float(v)
    return "0" if v == 0 else REG.fmt_number(v, digits)


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * float(v):.0f}%"


def _iv(r: TransplantRow, key: str, f=_f) -> str | tuple[str, str]:
    v, lo, hi = r.raw(key), r.raw(f"{key}_lo"), r.raw(f"{key}_hi")
    if v is None:
        return "–"
    return (f(v), f"[{f(lo)}, {f(hi)}]") if lo is not None and hi is not None else f(v)


def _transition_answer(name: str, layers: list[LayerRow], trows: list[TransplantRow]) -> dict:
    moved = [r for r in layers if (r.act_rel_diff or 0) > MOVE_THRESHOLD]
    first = min((r.layer for r in moved), default=None)
    peak = max(layers, key=lambda r: r.logit_lens_kl or 0, default=None)
    models = [r for r in trows if r.row == "model"]
    parts = [r for r in trows if r.row == "part"]
    carriers, partly = [], []
    for r in parts:
        lo, v = r.lower("kl_recovered"), r.value("kl_recovered")
        if lo is not None and lo >= CARRY_SHARE:
            carriers.append(r)
        elif v is not None and v >= CARRY_SHARE / 2:
            partly.append(r)
    best = {}
    for part_kind in ("groups", "layers"):
        ps = [r for r in parts if r.partition == part_kind and r.value("kl_recovered") is not None]
        if ps:
            best[part_kind] = max(ps, key=lambda r: r.value("kl_recovered"))
    acc_text, acc_changed = "not measured", False
    if len(models) == 2:
        a, b = models
        lo, hi = b.value("acc_change_lo"), b.value("acc_change_hi")
        acc_changed = lo is not None and hi is not None and (lo > 0 or hi < 0)
        acc_text = (f"{_pct(a.value('accuracy'))} → {_pct(b.value('accuracy'))} "
                    f"(B − A {_f(b.value('acc_change'))} [{_f(lo)}, {_f(hi)}]"
                    f"{'' if acc_changed else ', no clear change'})")

    def label(r):
        return f"{r.part} ({_pct(r.value('kl_recovered'))} [{_pct(r.value('kl_recovered_lo'))}, " \
               f"{_pct(r.value('kl_recovered_hi'))}])"

    if not parts:
        carrier_text = "not measured (no transplants)"
    elif carriers:
        carrier_text = "; ".join(label(r) for r in carriers)
    elif partly:
        carrier_text = "no single part; partly: " + "; ".join(label(r) for r in partly)
    else:
        carrier_text = "no single part (the change is spread out)"
    sums = {r.partition: r for r in trows if r.row == "sum"}
    acc_carriers = [r for r in parts if acc_changed and (r.lower("acc_recovered") or -1) >= CARRY_SHARE]
    sentences = []
    largest = max((r for r in layers if r.layer >= 0), key=lambda r: r.act_rel_diff or 0, default=None)
    if first == -1:  # the stage changed the embedding table, so every layer's input differs: say where it grows most
        sentences.append("The embedding table changed, so activations differ from the first layer on"
                         + (f"; the relative activation change is largest at layer {largest.layer} "
                            f"({_f(largest.act_rel_diff)})" if largest else "")
                         + (f", and the readout changes most at layer {peak.layer} (logit-lens KL "
                            f"{_f(peak.logit_lens_kl)} nats/token)" if peak else ""))
    elif first is not None:
        sentences.append(f"Activations first move at layer {first}"
                         + (f"; the readout changes most at layer {peak.layer} (logit-lens KL "
                            f"{_f(peak.logit_lens_kl)} nats/token)" if peak else ""))
    else:
        sentences.append("No layer's activations move beyond the threshold")
    if parts:
        sentences.append(f"By KL, the change is carried by: {carrier_text}")
        if acc_changed:
            sentences.append("By accuracy: " + ("; ".join(f"{r.part} ({_pct(r.value('acc_recovered'))})"
                                                         for r in acc_carriers) or "no single part recovers half of it"))
        for k, r in sums.items():
            sentences.append(f"Additivity ({k}): the parts' recovered KL shares sum to {_pct(r.value('kl_recovered'))}"
                             + (f", their accuracy changes to {_f(r.value('acc_change'))}" if acc_changed else ""))
    return {
        "transition": name,
        "first_layer": first,
        "first_layer_text": "none" if first is None else "embeddings (table changed)" if first == -1 else str(first),
        "peak_kl_layer": None if peak is None else peak.layer,
        "peak_kl_text": "–" if peak is None else f"layer {peak.layer}: {_f(peak.logit_lens_kl)}",
        "carriers": [r.part for r in carriers],
        "partly": [r.part for r in partly],
        "best": {k: r.part for k, r in best.items()},
        "carrier_text": carrier_text,
        "accuracy_changed": acc_changed,
        "accuracy_text": acc_text,
        "answer": ". ".join(sentences) + ".",
    }


def mechanism_record(summary: MechanismSummary | dict | None, adl: dict | None = None, adl_top: int = 5) -> dict | None:
    """Per transition: where the change starts, which part carries it (stated criteria), and the tables.

    Pure: the stored mechanism results (:class:`MechanismSummary`, or the dict of ``mechanism/summary.json``
    with ``adl.json``'s) in, a small dict out; None when there is nothing stored.
    """
    summary = MechanismSummary.coerce(summary)
    if not summary:
        return None
    adl = adl if adl is not None else summary.adl
    layers, trows = summary.layers, summary.transplant
    out = [_transition_answer(t, [r for r in layers if r.transition == t], [r for r in trows if r.transition == t])
           for t in summary.transitions]
    ltab = {"id": "tbl-mechanism-layers", "caption": "Per layer (same inputs through A and B)",
            "header": ["transition", "layer", "CKA", "relative activation change", "logit-lens KL (nats/token)"],
            "rows": [[r.transition, str(r.layer), _f(r.cka, 6), _f(r.act_rel_diff), _f(r.logit_lens_kl)] for r in layers],
            "note": f"{summary.n_problems} problems in the later model's prompt format and "
                    f"{len(summary.plain_texts)} plain-text prompts; every prompt token counts."}
    ttab = {"id": "tbl-mechanism-transplant", "caption": "Delta transplants: A + ΔW[part] on the problems (greedy)",
            "header": ["transition", "model / part", "partition", "share of ‖ΔW‖²", "accuracy", "accuracy − A",
                       "KL to A", "KL to B", "KL(B‖A) removed", "accuracy change recovered"],
            "rows": [[r.transition, r.part, r.partition or r.row, _pct(r.value("delta_share")),
                      _iv(r, "accuracy"), _iv(r, "acc_change"), _iv(r, "kl_to_a"), _iv(r, "kl_to_b"),
                      _iv(r, "kl_recovered", _pct), _iv(r, "acc_recovered", _pct)] for r in trows],
            "note": "KL to X: mean per token of KL(p_X ‖ p_model) along B's greedy answers, full vocabulary. "
                    "Intervals: 95% bootstrap over problems. Sum rows: the sum over that partition's parts."}
    arows = []
    for t in (adl or {}).get("transitions") or []:
        for L in t.get("layers") or []:
            arows.append([t["transition"], str(L["layer"]), _f(L.get("norm")),
                          " ".join(repr(x["text"]) for x in L["promoted"][:adl_top]),
                          " ".join(repr(x["text"]) for x in L["suppressed"][:adl_top])])
    atab = {"id": "tbl-mechanism-adl", "caption": "Activation difference lens: mean h_B − h_A over the first "
            f"{(adl or {}).get('k', '?')} positions of plain text, read through B's final norm and unembedding",
            "header": ["transition", "layer", "‖mean difference‖", "promoted tokens", "suppressed tokens"],
            "rows": arows, "note": "Tokens as decoded text (Python repr, so spaces and newlines show)."}
    return {"transitions": out, "tables": [ltab, ttab] + ([atab] if arows else []), "criteria": list(CRITERIA),
            "notes": list(summary.notes), "figures": [], "seconds": summary.seconds, "settings": summary.settings}


def mechanism_section(out_dir: str | Path, embed: bool = True) -> dict | None:
    """The record of ``OUT/mechanism`` (figures as data URIs when ``embed``), or None when it holds no results."""
    from ptlens.results import files as F  # every output name is defined there

    out = Path(out_dir)
    summary = load_mechanism(out)
    if summary is None:
        return None
    rec = mechanism_record(summary)
    files = summary.files
    missing = [k for k in FIGURES if not files.get(k) or not (out / files[k]).is_file()]
    if missing and (summary.layers or summary.transplant):
        from ptlens.mechanism.figures import write_figures

        files = {**files, **{k: str(p.relative_to(out)) for k, p in write_figures(summary.doc, out / "mechanism").items()}}
    for key, (title, caption) in FIGURES.items():
        p = files.get(key)
        if p and (out / p).is_file():
            fig = {"key": key, "path": p, "title": title, "caption": caption, "anchor": f"fig-mechanism-{key}"}
            if embed:
                fig["src"] = "data:image/png;base64," + base64.b64encode((out / p).read_bytes()).decode("ascii")
            rec["figures"].append(fig)
    rec["input"] = (F.MECHANISM_SUMMARY, summary.sha256)
    return rec


def mechanism_markdown(rec: dict | None) -> list[str]:
    """report.md lines of the Mechanism section ("not measured" without results)."""
    from ptlens.report.mdkit import esc, md_table

    out = ["## Mechanism: which layers and modules carry the change", ""]
    if not rec:
        return out + ["_Not measured: no mechanism results in this folder (run `ptlens mechanism` or `ptlens run`)._", ""]
    for t in rec["transitions"]:
        out += [f"- **{esc(t['transition'])}**: {esc(t['answer'])} Accuracy {esc(t['accuracy_text'])}."]
    out += ["", "Criteria:", ""] + [f"- {esc(c)}" for c in rec["criteria"]] + [""]
    for tab in rec["tables"]:
        out += md_table(tab)
    for f in rec["figures"]:
        out += [f"![{esc(f['title'])}]({f['path']})", "", f"*{esc(f['title'])}.* {esc(f['caption'])}", ""]
    if rec["notes"]:
        out += [f"- {esc(n)}" for n in rec["notes"]] + [""]
    return out
