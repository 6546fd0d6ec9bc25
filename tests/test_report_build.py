"""build_report on stored results: files, determinism, tolerance of missing parts, escaping, and a real Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from ptlens.errors import PtlensError
from ptlens.report import build_report
from ptlens.report.verdicts import NOT_MEASURED, QUESTIONS
from test_report_helpers import (XSS_IMG, XSS_SCRIPT, Chromium, find_chromium, real_behaviour, real_weights,
                                 write_behaviour)

MODELS = ["base", "sft", "dpo", "rlvr#1", "rlvr#2"]
MD_BREAKER = "```\n# not a heading | not | a table\n<b>bold?</b> [link](http://example.com)"


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A folder with a real weight scan (RLVR as a two-checkpoint trajectory) and behaviour results computed by the
    behaviour engine's metrics; one response of sft tries script injection, one of rlvr#2 tries Markdown injection."""
    root = tmp_path_factory.mktemp("report")
    out = root / "out"
    real_weights(out, root / "lineage", trajectory=True)
    special = {("sft", "p0", 0): f"Let me think. {XSS_SCRIPT} {XSS_IMG} so \\boxed{{0}}",
               ("rlvr#2", "p1", 0): MD_BREAKER}
    results, rows = real_behaviour(MODELS, n_problems=12, special=special)
    write_behaviour(out, results, rows)
    return out


@pytest.fixture(scope="module")
def built(stored):
    return build_report(stored)


def _outputs(out: Path) -> dict[str, bytes]:
    files = ["report.html", "report.md", "report/verdicts.json", *sorted(
        str(p.relative_to(out)) for p in (out / "report").glob("*.png"))]
    return {f: (out / f).read_bytes() for f in files}


def test_report_files_and_verdicts(stored, built):
    assert built["html"] == stored / "report.html" and built["markdown"] == stored / "report.md"
    assert [v.question for v in built["verdicts"]] == list(QUESTIONS)
    labels = {v.question: v.label for v in built["verdicts"]}
    assert labels["Learning dynamics"] != NOT_MEASURED and labels["Reasoning behaviour"] != NOT_MEASURED
    # synthetic lineage has no stage facts: efficiency is not measured, and says why
    eff = next(v for v in built["verdicts"] if v.question == "Sample efficiency")
    assert eff.label == NOT_MEASURED and eff.evidence == [] and "facts" in eff.summary
    for key in ("overview", "pass_at_k", "convergence", "transfer"):
        assert key in built["figures"], key
    data = json.loads((stored / "report" / "verdicts.json").read_text())
    assert [v["label"] for v in data["verdicts"]] == [v.label for v in built["verdicts"]]
    assert data["criteria"]["weight_factor"] == 2.0 and data["hypotheses"]["B2"]["text"]
    d = data["decision"]  # derived from these verdicts (test_report_decision.py has the rule's branches)
    assert d["schema"] == 1 and d["branch"] == built["decision"].branch and d["verdicts"]["behaviour"] == \
        labels["Reasoning behaviour"] and d["inputs"]["pair"] == ["sft", "rlvr#2"]


def test_rebuild_is_byte_identical_and_location_independent(stored, built, tmp_path):
    first = _outputs(stored)
    build_report(stored)
    assert _outputs(stored) == first
    moved = tmp_path / "elsewhere"
    shutil.copytree(stored, moved, ignore=shutil.ignore_patterns("report*"))
    build_report(moved)
    assert _outputs(moved) == first


def test_html_is_self_contained_and_escapes_model_text(stored, built):
    html = (stored / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html), "no network references"
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert len(srcs) == len(built["figures"]) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;document.title=&#39;pwned&#39;&#34;&gt;" in html
    assert "<img src=x" not in html
    assert "Content-Security-Policy" in html
    for section in ("Methods", "Reproducibility", "Samples side by side", "Verdicts"):
        assert section in html
    # reproducibility: command, versions, seeds, input hashes
    assert "ptlens report &lt;this folder&gt;" in html and "sha256" in html and "bootstrap: 200 resamples" in html


def test_markdown_escapes_model_text(stored, built):
    md = (stored / "report.md").read_text(encoding="utf-8")
    fence = None
    for line in md.splitlines():
        m = re.match(r"^(`{3,})", line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if line == fence:
                fence = None
            continue
        assert not line.startswith("# not a heading"), line
    assert fence is None
    assert "````text" in md  # a fence longer than the response's own ``` run
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert "<script" not in rendered and "<img src=x" not in rendered and "<b>bold" not in rendered
    assert "\\(" not in md and "-&gt;" not in md and "&lt;" not in md  # readable as text: only what Markdown needs


def test_weights_only_and_behaviour_only(stored, tmp_path):
    w = tmp_path / "w"
    shutil.copytree(stored / "weights", w / "weights")
    shutil.copy(stored / "sft_vs_rlvr_comparison.png", w)
    res = build_report(w)
    labels = [v.label for v in res["verdicts"]]
    assert labels[1] == NOT_MEASURED and labels[0] != NOT_MEASURED
    html = (w / "report.html").read_text()
    assert "No behaviour results in this folder" in html and "No samples in this folder" in html

    b = tmp_path / "b"
    (b / "behavior").mkdir(parents=True)
    shutil.copy(stored / "model_comparison_results.json", b)
    shutil.copy(stored / "behavior" / "samples.jsonl", b / "behavior")
    res = build_report(b)  # behaviour figures missing: redrawn from the results and samples
    assert "pass_at_k" in res["figures"] and (b / "behavior" / "pass_at_k.png").is_file()
    labels = [v.label for v in res["verdicts"]]
    assert labels[0] == NOT_MEASURED and labels[2] == NOT_MEASURED and labels[3] == NOT_MEASURED
    assert labels[1] != NOT_MEASURED
    assert "No weight results in this folder" in (b / "report.html").read_text()


def test_sample_efficiency_from_stage_facts(stored, tmp_path):
    out = tmp_path / "facts"
    shutil.copytree(stored, out, ignore=shutil.ignore_patterns("report*"))
    f = out / "weights" / "summary.json"
    s = json.loads(f.read_text())
    facts = [{"algorithm": "pretraining"}, {"algorithm": "SFT", "examples": 1000, "epochs": 2, "learning_rate": 1e-5},
             {"algorithm": "DPO", "pairs": 400}, {"algorithm": "GRPO", "prompts": 50}, {"algorithm": "GRPO", "prompts": 100}]
    for c, fc in zip(s["lineage"]["checkpoints"], facts):
        c["facts"] = fc
    f.write_text(json.dumps(s))
    res = build_report(out)
    eff = next(v for v in res["verdicts"] if v.question == "Sample efficiency")
    # the RLVR stage is a trajectory of two steps: its whole change is derived from the steps and their cosine
    assert eff.label != NOT_MEASURED, eff.summary
    assert any(e.metric == "prompts [rlvr]" and e.value == 100 for e in eff.evidence)
    assert "sample_efficiency" in res["figures"]
    assert "1,000 examples" in (out / "report.html").read_text()


def test_user_errors(tmp_path):
    with pytest.raises(PtlensError, match="no stored results"):
        build_report(tmp_path)
    with pytest.raises(PtlensError, match="no such folder"):
        build_report(tmp_path / "missing")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "summary.json").write_text("{not json")
    with pytest.raises(PtlensError, match=r"summary\.json: not valid JSON"):
        build_report(tmp_path)


# ---------------------------------------------------------------- in a real browser

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; "
                                                              ".ci/run installs it)")


@needs_chromium
def test_report_in_headless_chromium(stored, built, tmp_path):
    browser = Chromium(CHROMIUM, tmp_path / "profile")
    try:
        session = browser.open((stored / "report.html").resolve().as_uri())
        title = browser.evaluate(session, "document.title")
        page = browser.evaluate(session, """(() => {
            const imgs = [...document.images];
            const responses = [...document.querySelectorAll('pre.response')].map(p => p.textContent);
            return {
              images: imgs.length,
              dataImages: imgs.filter(i => i.src.startsWith('data:image/png;base64,')).length,
              decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
              scripts: document.scripts.length,
              injected: document.querySelectorAll('pre.response img, pre.response script').length,
              script: responses.some(t => t.includes('<script>alert(1)</script>')),
              img: responses.some(t => t.includes(`<img src=x onerror="document.title='pwned'">`)),
              verdicts: document.querySelectorAll('.verdict').length,
              height: document.body.scrollHeight,
              // a table wider than its box hides its last columns behind a scrollbar (and cuts them in print)
              cut: [...document.querySelectorAll('.tablewrap')].filter(w => w.scrollWidth > w.clientWidth + 1)
                     .map(w => w.id || w.querySelector('th')?.textContent),
              decision: document.querySelectorAll('#decision + .decision dt').length,
            };
        })()""")
        # on a narrow window the table of contents wraps rather than running off the page
        toc_cut = browser.evaluate(session, """(() => {
            document.body.style.width = '600px';
            const n = document.querySelector('nav.toc');
            return n.scrollWidth > n.clientWidth + 1;
        })()""")
        errors = browser.errors()
    finally:
        browser.close()
    assert errors == [], errors
    assert toc_cut is False
    assert title == "ptlens report: base → sft → dpo → rlvr#1 → rlvr#2" and "pwned" not in title
    assert page["images"] == len(built["figures"]) == page["dataImages"] == page["decoded"] >= 10
    assert page["scripts"] == 0 and page["injected"] == 0
    assert page["script"] and page["img"], "the injected markup shows as text"
    assert page["verdicts"] == 4 and page["height"] > 2000
    assert page["cut"] == [], page["cut"]  # at 1400 px every table fits or wraps
    assert page["decision"] >= 4  # why, how sure, next step, rule


def test_report_command(stored, built, tmp_path):
    import typer
    from typer.testing import CliRunner

    from ptlens.cli.report import report

    app = typer.Typer()
    app.command()(report)
    runner = CliRunner()
    res = runner.invoke(app, [str(stored)])
    assert res.exit_code == 0, res.output
    assert "Learning dynamics" in res.output and "Verdicts" in res.output
    res = runner.invoke(app, [str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no such folder" in res.output
