"""report.md: the same verdicts, tables and figures (linked, not embedded) for a repository or a notebook.

Escaping and tables: ``report.mdkit`` (shared with the mechanism section).
"""

from __future__ import annotations


from ptlens.report.mdkit import esc, fence, md_table


def _fig(f: dict) -> list[str]:
    return [f"![{esc(f['title'])}]({f['path']})", "", f"*{esc(f['title'])}.* {esc(f['caption'])}", ""]


def _verdict(v: dict) -> list[str]:
    out = [f"**Verdict: {v['label'].upper()}** — {esc(v['comparison'] or '')}{' — ' if v['comparison'] else ''}"
           f"{esc(v['summary'])}", "", f"Criterion: {esc(v['criterion'])}", ""]
    if v["checks"]:
        out += ["| check | hypothesis | outcome | evidence | rule |", "|---|---|---|---|---|"]
        for c in v["checks"]:
            h = c["hypothesis"]
            hyp = f"{h.id}: “{esc(h.text)}”" if h else "–"
            ev = "; ".join(f"{esc(m)} = {esc(val)}{(' ' + esc(iv)) if iv else ''}" for m, val, iv in c["evidence"])
            out.append(f"| {esc(c['name'])} | {hyp} | {esc(c['outcome'])} | {ev} | {esc(c['rule'])} |")
        out.append("")
    return out


def _decision(d) -> list[str]:
    """The overall decision (:mod:`ptlens.report.decision`) at the top of report.md."""
    from ptlens.report.decision import decision_rows

    out = ["## Decision", "", f"**{esc(d.branch.upper())}** — {esc(d.headline)}", ""]
    for name, text in decision_rows(d):
        if isinstance(text, list):
            out += [f"- **{esc(name)}**:"] + [f"  - {esc(t)}" for t in text]
        else:
            out.append(f"- **{esc(name)}**: {esc(text)}")
    return out + [""]


def render_markdown(ctx: dict) -> str:
    v = ctx["verdicts"]
    out = [f"# What post-training did: {esc(' → '.join(ctx['stages']))}", ""]
    out += [f"Weights: {'yes' if ctx['has_weights'] else 'not measured'}; behaviour: "
            f"{'yes' if ctx['has_behaviour'] else 'not measured'}." + (f" Preset: {esc(ctx['preset'])}." if ctx["preset"] else ""), ""]
    out += [f"> {esc(b)}" for b in ctx["banners"]] + ([""] if ctx["banners"] else [])
    out += _decision(ctx["decision"])
    out += ["## Verdicts", "", "The study's hypotheses (from the user's analysis plan) are under test, not findings; "
            "*unexpected* means a hypothesised direction came out clearly reversed.", "",
            "| question | verdict | compared | checks |", "|---|---|---|---|"]
    out += [f"| {esc(x['question'])} | **{x['label']}** | {esc(x['comparison'] or '–')} | {esc(x['summary'])} |" for x in v]
    out += ["", "## Lineage", "", "| checkpoint | model | algorithm | training data | learning rate | notes |",
            "|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in ctx["lineage"]]
    out.append("")
    vk = ctx["verdict"]
    sections = [("1. Learning dynamics", vk["dynamics"], ctx["weights"], ctx["weight_figures"]),
                ("2. Reasoning behaviour", vk["behaviour"], ctx["behaviour"], ctx["behaviour_figures"]),
                ("3. Sample efficiency", vk["efficiency"], ctx["efficiency"],
                 [ctx["figures"][k] for k in ("sample_efficiency", "convergence") if k in ctx["figures"]]),
                ("4. Transfer", vk["transfer"], ctx["transfer"], [ctx["figures"][k] for k in ("transfer",) if k in ctx["figures"]])]
    for title, verdict, sec, figs in sections:
        out += [f"## {title}", ""] + _verdict(verdict)
        if not sec:
            out += ["_Not measured: the results this section needs are not in this folder._", ""]
            continue
        for n in sec.get("notes") or []:
            out += [f"- {esc(n)}"]
        if sec.get("notes"):
            out.append("")
        for t in sec["tables"]:
            out += md_table(t)
        for f in figs:
            out += _fig(f)
    from ptlens.report.mechanism import mechanism_markdown

    out += mechanism_markdown(ctx.get("mechanism"))
    b = ctx["browser"]
    if b:
        out += ["## Samples side by side", "",
                f"{min(len(b.problems), 10)} of {b.total_problems} problems, up to one sample per model; all samples in "
                f"`{ctx['files']['samples']}`, and more in report.html.", ""]
        for p in b.problems[:10]:
            out += [f"### {esc(p.id)} (gold: {esc(p.gold)})", "", fence(p.question), ""]
            for m in p.models:
                s = m.samples[0] if m.samples else None
                if s is None:
                    continue
                mark = "correct" if s.correct else "wrong"
                out += [f"**{esc(m.name)}** — {m.correct}/{m.n} correct; sample {s.sample}: {mark}, "
                        f"{s.tokens if s.tokens is not None else '?'} tokens{' (hit the limit)' if s.truncated else ''}",
                        "", fence(s.text + (f"\n… ({s.clipped} more characters)" if s.clipped else "")), ""]
    m = ctx["methods"]
    out += ["## Methods", "", "### The study's hypotheses (under test)", "", "| id | the analysis plan's words | how ptlens tests it |",
            "|---|---|---|"]
    out += [f"| {h.id} | “{esc(h.text)}” | {esc(h.test)} |" for h in m["hypotheses"]]
    out += ["", "### Verdict criteria", ""] + [f"- {esc(c)}" for c in m["criteria"]] + [""]
    for title, defs in (("Weight metrics", m["weights"]), ("Behaviour metrics", m["behaviour"]),
                        ("Stages, efficiency and accumulation", m["efficiency"])):
        out += [f"### {title}", ""] + [f"- **{esc(n)}**: {esc(d)}" for n, d in defs] + [""]
    if m["settings"]:
        out += ["### Settings", "", "| step | setting | value |", "|---|---|---|"]
        out += [f"| {esc(a)} | {esc(b_)} | {esc(c)} |" for a, b_, c in m["settings"]] + [""]
    r = ctx["repro"]
    out += ["## Reproducibility", ""] + [f"- {esc(w)}: `{c.replace('`', '')}`" for w, c in r["commands"]] + [""]
    out += ["| checkpoint | label | spec | repository | requested revision | resolved revision |", "|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in r["lineage"]] + [""]
    out += [f"- {esc(s)}" for s in r["seeds"]] + [""]
    out += ["| package | weight scan | behaviour run |", "|---|---|---|"]
    out += [f"| {esc(a)} | {esc(b_)} | {esc(c)} |" for a, b_, c in r["versions"]] + [""]
    out += [f"- `{p}` sha256 `{d}`" for p, d in r["inputs"]] + [""]
    return "\n".join(out)
