"""The results store: every record type round-trips, schema versions are enforced, the registry covers every
column, and the report reads stored results without importing the sampling driver."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from ptlens.errors import PtlensError
from ptlens.results import files as F
from ptlens.results import registry as REG
from ptlens.results.rows import (AggregateRow, CosineRow, Estimate, ModelStats, ProblemStats, TransitionRef,
                                largest)
from ptlens.results.store import (BEHAVIOR_SCHEMA, WEIGHTS_SCHEMA, BehaviorResults, SampleRecord, TensorRow,
                                  WeightSummary, load_behavior_results, load_samples, load_weight_summary,
                                  read_tensor_rows, save_behavior_results, save_weight_summary, write_samples,
                                  write_tensor_rows)

ROOT = Path(__file__).resolve().parents[1]


def _summary(**over) -> dict:
    d = {"schema": WEIGHTS_SCHEMA, "ptlens": "weights", "versions": {"ptlens": "0.1.0"}, "command": ["ptlens", "weights"],
         "lineage": {"checkpoints": [{"name": "a", "spec": "/x/a", "path": "/x/a"},
                                    {"name": "b", "spec": "/x/b", "path": "/x/b"}]},
         "settings": {"k": 16, "spectral": "off"},
         "transitions": [{"name": "a→b", "a": 0, "b": 1, "kind": "consecutive"}],
         "aggregates": {"model": [{"transition": "a→b", "key": [], "rel_change": 0.01, "changed_exact": 0.5,
                                   "changed_exact_null": 0.9}],
                        "group": [{"transition": "a→b", "key": ["mlp"], "rel_change": 0.02}]},
         "added_rows": [], "tied_embeddings": {"a": False, "b": False}, "missing_tensors": {}, "skipped_tensors": {},
         "nonfinite": [], "tensors_scanned": 3, "bytes_read": 1234, "seconds": 0.5, "throughput_gb_per_s": 2.5e-6,
         "figures": {"overview": "sft_vs_rlvr_comparison.png"}}
    d.update(over)
    return d


def _sample(**over) -> SampleRecord:
    d = dict(model="sft", label="sft", problem_id="p0", sample=1, prompt="Q: 2+2?", response="\\boxed{4} — ✓",
             gold="4", extracted="4", answer_key="4", correct=True, tokens=7, truncated=False, finish="eos", seed=99,
             token_ids=[1, 2, 3], logprob_sum=-1.5, mean_logprob=-0.21, entropy_sum=0.7, mean_entropy=0.1,
             cross_logprobs={"base": {"logprob_sum": -3.0, "tokens": 7, "mean_logprob": -0.43, "kl_sum": 0.2,
                                      "kl_inf_tokens": 0}})
    d.update(over)
    return SampleRecord(**d)


# ---------------------------------------------------------------- round trips


def test_weight_summary_round_trip(tmp_path):
    doc = _summary(future_field={"kept": True})
    s = WeightSummary.from_dict(doc)
    assert s.extra == {"future_field": {"kept": True}}
    assert s.row("group", "a→b", ["mlp"]).value("rel_change") == 0.02 and s.row("model", "a→b") is not None
    save_weight_summary(tmp_path, s)
    raw = json.loads((tmp_path / F.WEIGHT_SUMMARY).read_text())
    assert raw == doc and list(raw)[:2] == ["schema", "ptlens"]
    assert load_weight_summary(tmp_path) == s


def test_tensor_rows_round_trip(tmp_path):
    cols = REG.tensor_columns(16)
    metric_cols = [c for c in cols if c not in REG.ID_COLUMNS and c not in REG.SUM_COLUMNS and c not in REG.TAIL_COLUMNS]
    values = {c: (i + 0.1) / 7 for i, c in enumerate(metric_cols)}
    values.update(entries=12, nonfinite=0, sigma1=None, rank_fraction=math.inf)
    rows = [TensorRow("model.layers.0.mlp.down_proj.weight", "a→b", "consecutive", "mlp.down_proj", "mlp", 0, (4, 8),
                      "bfloat16", "float32", 4, 4, 0, values, {c: float(j) * 1.5 for j, c in enumerate(REG.SUM_COLUMNS)},
                      3),
            TensorRow("lm_head.weight", "a→b", "consecutive", "lm_head", "head", None, (10, 8), "float32", "float32",
                      9, 10, 1, {c: None for c in metric_cols}, {c: 0.0 for c in REG.SUM_COLUMNS}, 0)]
    path = tmp_path / F.TENSORS_CSV
    path.parent.mkdir()
    write_tensor_rows(path, rows, cols)
    assert path.read_text().split("\n")[0].split(",") == cols
    back = read_tensor_rows(path)
    assert back == rows  # floats written with repr come back bit for bit; None ↔ empty; ints stay ints
    assert back[0].metrics["rank_fraction"] == math.inf and back[1].layer is None


def test_behavior_results_round_trip(tmp_path):
    doc = {"schema": BEHAVIOR_SCHEMA, "kind": "ptlens.behavior", "created": "2026-01-01T00:00:00+0000",
           "command": ["ptlens", "behavior"], "settings": {"n_samples": 4}, "versions": {}, "lineage": {"checkpoints": []},
           "models_info": [{"name": "a"}], "problems": [{"id": "p0"}], "ks": [1, 4],
           "models": {"a": {"metrics": {"accuracy": {"value": 0.5, "lo": 0.25, "hi": 0.75}}}},
           "consecutive": [], "headline_problems": {"n": 1, "of": 1, "excluded_tag": None}, "by_tag": {},
           "figures": ["behavior/pass_at_k.png"]}
    r = BehaviorResults.from_dict(doc)
    assert r.models["a"].metrics["accuracy"] == Estimate(0.5, 0.25, 0.75) and r.ks == [1, 4]
    save_behavior_results(tmp_path, r)
    raw = json.loads((tmp_path / F.BEHAVIOR_RESULTS).read_text())
    assert raw == doc and list(raw) == list(doc)  # same keys in the same order as the driver writes them
    assert load_behavior_results(tmp_path) == r


def test_samples_round_trip(tmp_path):
    recs = [_sample(), _sample(model="base", sample=0, extracted=None, correct=False, logprob_sum=None,
                               cross_logprobs={})]
    (tmp_path / F.BEHAVIOR_DIR).mkdir()
    write_samples(tmp_path / F.SAMPLES_JSONL, recs)
    assert load_samples(tmp_path) == recs
    # a reader ignores fields a newer writer added
    row = json.loads((tmp_path / F.SAMPLES_JSONL).read_text().split("\n")[0])
    assert SampleRecord.from_dict({**row, "new_field": 1}) == recs[0]


# ---------------------------------------------------------------- schema versions


def test_newer_schema_is_one_clear_line(tmp_path):
    (tmp_path / F.WEIGHTS_DIR).mkdir()
    (tmp_path / F.WEIGHT_SUMMARY).write_text(json.dumps(_summary(schema=WEIGHTS_SCHEMA + 1)))
    with pytest.raises(PtlensError) as e:
        load_weight_summary(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "newer ptlens" in msg and f"schema {WEIGHTS_SCHEMA + 1}" in msg
    (tmp_path / F.BEHAVIOR_RESULTS).write_text(json.dumps({"schema": 99, "models": {}}))
    with pytest.raises(PtlensError, match=r"newer ptlens \(schema 99"):
        load_behavior_results(tmp_path)
    (tmp_path / F.BEHAVIOR_RESULTS).write_text(json.dumps({"schema": "x", "models": {}}))
    with pytest.raises(PtlensError, match="not a version number"):
        load_behavior_results(tmp_path)


def test_older_file_without_schema_still_loads(tmp_path):
    doc = _summary()
    del doc["schema"]
    (tmp_path / F.WEIGHTS_DIR).mkdir()
    (tmp_path / F.WEIGHT_SUMMARY).write_text(json.dumps(doc))
    s = load_weight_summary(tmp_path)
    assert s.schema == 0 and s.tensors_scanned == 3


def test_cli_report_on_newer_schema_exits_2_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from ptlens.cli import app

    (tmp_path / F.WEIGHTS_DIR).mkdir()
    (tmp_path / F.WEIGHT_SUMMARY).write_text(json.dumps(_summary(schema=WEIGHTS_SCHEMA + 5)))
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2
    lines = [x for x in res.output.strip().split("\n") if x.strip()]
    assert len(lines) == 1 and "newer ptlens" in lines[0], res.output


# ---------------------------------------------------------------- the registry


def test_every_tensors_csv_column_is_registered_in_kernel_order():
    from ptlens.weights import kernels as K
    from ptlens.weights.outputs import ELEMENTWISE, SPECTRAL, SUM_FIELDS

    assert len(REG.SUM_COLUMNS) == K.T_FIELDS
    for k in (1, 16, 32):
        cols = REG.tensor_columns(k)
        assert len(cols) == len(set(cols))
        unregistered = [c for c in cols if REG.describe_column(c, k) is None]
        assert unregistered == []
    assert REG.describe_column("not_a_column") is None
    assert ELEMENTWISE == REG.metric_columns(REG.ELEMENTWISE) and SPECTRAL == REG.metric_columns(REG.SPECTRAL)
    assert SUM_FIELDS == list(REG.SUM_COLUMNS)
    # the metric finalize computes are exactly the registered element-wise metrics (no more, no fewer)
    import numpy as np

    from ptlens.weights.metrics import finalize

    computed = set(finalize(np.ones(K.T_FIELDS)))
    registered = {m.name for m in REG.metrics(REG.ELEMENTWISE)}
    assert computed == registered


def test_metrics_md_names_every_registered_metric():
    text = (ROOT / "docs" / "METRICS.md").read_text(encoding="utf-8")
    missing = [m.column(16) for m in REG.METRICS if f"`{m.column(16)}" not in text and m.column(16) not in text]
    assert missing == []


def test_registry_drives_the_tables_and_methods(tmp_path):
    """A metric marked for a table appears there with its header; the methods list every metric the registry marks."""
    from ptlens.report.methods import weight_definitions
    from ptlens.weights.report_md import weight_report_markdown

    s = _summary()
    s["aggregates"]["model_no_embed_head"] = []
    s["aggregates"].update(layer=[], kind=[], delta_cosine_model=[])
    s["settings"].update(device_used="cpu", tolerance=1e-5)
    md = weight_report_markdown(s)
    header = next(line for line in md.split("\n") if line.startswith("| transition | rel. change"))
    assert header == "| " + " | ".join(["transition", *[m.header(16) for m in REG.metrics(table=REG.WEIGHT_MD)]]) + " |"
    assert "| a→b | 0.01 |" in md and "50.00% (null 90.00%)" in md
    labels = [a for a, _ in weight_definitions()]
    for m in REG.METRICS:
        if m.methods:
            assert (m.methods_label or m.name) in labels
    from ptlens.cli.console import weight_summary_renderables
    from rich.console import Console

    out = Console(width=200, record=True)
    for r in weight_summary_renderables(s, tmp_path, 200):
        out.print(r)
    text = out.export_text()
    head = text.split("┡")[0]
    for m in REG.metrics(table=REG.CONSOLE):
        assert all(w in head for w in m.header(16).split())  # rich wraps headers at spaces
    assert "a→b" in text and "50.00%" in text and "RMS" not in head


def test_file_names_are_defined_once():
    """No module outside ptlens.results spells an output file name of the stores it now owns."""
    names = [F.BEHAVIOR_RESULTS, "weights/summary.json", "behavior/samples.jsonl", "tensors.csv",
             "weight_analysis_report.md", "report/verdicts.json", "sft_vs_rlvr_comparison.png", "spectral.png",
             "pass_at_k.png", "calibration.png", "depth_profile.png", "transfer.png", "report/transfer.png",
             "report.html", "report.md", "scores.jsonl", "settings.json", "mechanism/summary.json", "adl.json"]
    offenders = []
    for p in (ROOT / "src" / "ptlens").rglob("*.py"):
        if "results" in p.parts or "lab" in p.parts:
            continue
        text = p.read_text(encoding="utf-8")
        for n in names:
            if re.search(r"[\"']" + re.escape(n) + r"[\"']", text):
                offenders.append(f"{p.relative_to(ROOT)}: {n}")
    assert offenders == []


def test_report_does_not_import_the_sampling_driver(tmp_path):
    """Rebuilding a report from stored weights + behaviour results + samples loads no behaviour driver."""
    from ptlens.results.store import write_samples as ws

    out = tmp_path / "o"
    (out / F.BEHAVIOR_DIR).mkdir(parents=True)
    from ptlens.report.calibration import simulate_records
    import numpy as np

    recs = simulate_records(np.random.default_rng(0), 12, 4, names=("sft", "rlvr"))
    ws(out / F.SAMPLES_JSONL, recs)
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from ptlens.results.store import load_samples, save_behavior_results\n"
        "from ptlens.behavior.samples import problem_samples\n"
        "from ptlens.behavior.metrics import compare_models\n"
        f"out = Path({str(out)!r})\n"
        "recs = load_samples(out)\n"
        "ids = sorted({r.problem_id for r in recs}, key=lambda s: int(s[1:]))\n"
        "m = compare_models(problem_samples(recs, ['sft', 'rlvr'], ids), n_boot=20, seed=0)\n"
        "save_behavior_results(out, {'schema': 1, 'kind': 'ptlens.behavior', 'settings': {'n_samples': 4, 'seed': 0},\n"
        "    'lineage': {'checkpoints': [{'name': 'sft'}, {'name': 'rlvr'}]}, **m})\n"
        "from ptlens.report.build import build_report\n"
        "r = build_report(out)\n"
        "bad = [m for m in sys.modules if m in ('ptlens.behavior.run', 'ptlens.behavior.engines', 'ptlens.behavior.hf_model', 'torch')]\n"
        "print(json.dumps({'bad': bad, 'verdicts': [v.label for v in r['verdicts']]}))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().split("\n")[-1])
    assert got["bad"] == []
    assert len(got["verdicts"]) == 4
    assert (out / F.REPORT_HTML).is_file() and (out / F.BEHAVIOR_FIGURES["pass_at_k"]).is_file()


def test_a_new_metric_needs_only_the_registry(monkeypatch, tmp_path):
    """Register one more element-wise metric: the CSV header, the console summary, both markdown tables, the report
    table and the methods pick it up with no other change (its values come from the kernel, here a dict)."""
    from rich.console import Console

    from ptlens.cli.console import weight_summary_renderables
    from ptlens.report.sections import weights_section
    from ptlens.report.methods import weight_definitions
    from ptlens.weights.report_md import weight_report_markdown

    new = REG.Metric("sign_flip_share", REG.ELEMENTWISE, "Share of entries whose sign differs between A and B.",
                     "share of entries", "sign flips", pct=True, null=True,
                     tables=frozenset({REG.CONSOLE, REG.REPORT, REG.WEIGHT_MD}))
    monkeypatch.setattr(REG, "METRICS", (*REG.METRICS, new))
    cols = REG.tensor_columns(16)
    assert cols[cols.index("nonfinite") + 1: cols.index("nonfinite") + 3] == ["sign_flip_share", "sign_flip_share_null"]
    assert REG.describe_column("sign_flip_share_null").startswith("sign_flip_share of an unstructured update")
    s = _summary()
    s["aggregates"]["model"][0].update(sign_flip_share=0.125, sign_flip_share_null=0.25)
    s["aggregates"].update(model_no_embed_head=[], layer=[], kind=[], delta_cosine_model=[])
    s["settings"].update(device_used="cpu", tolerance=1e-5)
    assert "12.50% (null 25.00%)" in weight_report_markdown(s)
    model = weights_section(WeightSummary.from_dict(s))["tables"][0]
    assert model["header"][-1] == "sign flips" and model["rows"][0][-1] == "12.50%"
    out = Console(width=300, record=True)
    for r in weight_summary_renderables(s, tmp_path, 300):
        out.print(r)
    text = out.export_text()
    assert "sign" in text.split("┡")[0] and "flips" in text.split("┡")[0] and "12.50%" in text
    assert ("sign_flip_share", new.definition) in weight_definitions()
    row = TensorRow("w", "a→b", "consecutive", "q_proj", "attention", 0, (2, 2), "float32", "float32", 2, 2, 0,
                    {"sign_flip_share": 0.5}, {c: 0.0 for c in REG.SUM_COLUMNS}, 0)
    path = tmp_path / "t.csv"
    write_tensor_rows(path, [row], cols)
    assert read_tensor_rows(path)[0].metrics["sign_flip_share"] == 0.5


# ---------------------------------------------------------------- typed rows


def test_aggregate_rows_are_typed_with_their_nulls():
    s = WeightSummary.from_dict(_summary(aggregates={
        "model": [{"transition": "a→b", "key": [], "rel_change": 0.01, "changed_exact": 0.5, "changed_exact_null": 0.9,
                   "stable_rank_wmean": 4.0, "stable_rank_null_wmean": 8.0, "sigma1_wmean": math.inf}],
        "layer": [{"transition": "a→b", "key": [0], "rel_change": 0.3}, {"transition": "a→b", "key": [1], "rel_change": 0.5},
                  {"transition": "a→b", "key": [2]}],
        "delta_cosine_model": [{"t1": "a→b", "t2": "b→c", "key": [], "tensors": 3, "delta_cosine": -0.25}]}))
    row = s.row("model", "a→b")
    assert isinstance(row, AggregateRow) and row.key == () and row.transition == "a→b"
    assert row.null("changed_exact") == 0.9 and row.null("stable_rank_wmean") == 8.0 and row.null("rel_change") is None
    assert row.null_pairs() == {"changed_exact": (0.5, 0.9), "stable_rank_wmean": (4.0, 8.0)}
    assert row.value("sigma1_wmean") == math.inf and row.finite("sigma1_wmean") is None  # stored as is, finite on ask
    assert [r.key for r in largest(s.rows("layer", "a→b"), "rel_change", 2)] == [(1,), (0,)]
    assert s.row("layer", "a→b", [7]) is None and s.rows("layer", "x→y") == []
    assert s.cosines() == [CosineRow("a→b", "b→c", (), -0.25, 3)]
    assert s.transition_refs() == [TransitionRef("a→b", 0, 1, "consecutive")]


def test_behaviour_records_are_typed():
    doc = {"settings": {"n_samples": 2}, "lineage": {}, "ks": [1, 2], "bootstrap": {"level": 0.9},
           "models": {"a": {"metrics": {"accuracy": {"value": 0.5, "lo": 0.25, "hi": 0.75}}, "n_problems": 2,
                            "n_samples": 4, "accuracy_flexible": {"value": 0.75}},
                      "b": {"metrics": {"accuracy": {"value": None}, "junk": 3}}},
           "per_problem": {"a": [{"id": "p0", "n": 2, "correct": 1, "modal_answer": "4", "answer_confidence": 0.5,
                                  "distinct_answers": 2}]},
           "consecutive": [{"a": "a", "b": "b", "difference": {"accuracy": {"value": -0.5, "lo": -0.75, "hi": -0.25,
                                                                         "p": 0.01}},
                            "solved_sets": {"a_only": 1, "b_only": 0}}],
           "cross_kl": {"a": {"b": {"value": 1.5, "lo": 1.0, "hi": 2.0, "estimator": "exact"}}}}
    r = BehaviorResults.from_dict(doc)
    a, b = r.models["a"], r.models["b"]
    assert isinstance(a, ModelStats) and a.n_problems == 2 and a.n_samples == 4 and a.value("accuracy") == 0.5
    assert a.metrics["accuracy"].interval == (0.25, 0.75) and a.accuracy_flexible == Estimate(0.75)
    assert b.value("accuracy") is None and "junk" not in b.metrics and b.n_problems is None
    assert r.names == ["a", "b"] and r.level == 0.9
    (c,) = r.consecutive
    assert (c.a, c.b, c.difference["accuracy"].p, c.solved_sets["a_only"]) == ("a", "b", 0.01, 1)
    assert r.per_problem("a") == [ProblemStats("p0", 2, 1, "4", 0.5, 2)] and r.per_problem("a")[0].accuracy == 0.5
    assert r.cross("cross_kl")["a"]["b"] == Estimate(1.5, 1.0, 2.0)  # other stored keys (estimator …) not read
    assert BehaviorResults.coerce(None) is None and BehaviorResults.coerce({}) is None
    assert BehaviorResults.coerce(r) is r and WeightSummary.coerce({}) is None


def test_report_inputs_hold_records_only(tmp_path):
    """The report reads the store's records: ReportInputs has no dict of either document."""
    from ptlens.report.inputs import ReportInputs, load_inputs

    save_weight_summary(tmp_path, _summary())
    inp = load_inputs(tmp_path)
    assert isinstance(inp.weights, WeightSummary) and inp.behavior is None
    assert {f.name for f in fields(ReportInputs)} == {"out_dir", "weights", "behavior", "samples", "hashes"}
    assert inp.lineage["checkpoints"][0]["name"] == "a"


def test_mechanism_records_load_typed_and_refuse_what_they_cannot_read(tmp_path):
    from ptlens.results.mechanism import MECHANISM_SCHEMA, LayerRow, load_mechanism

    assert load_mechanism(tmp_path) is None  # no mechanism results: the section says "not measured"
    (tmp_path / F.MECHANISM_DIR).mkdir()
    doc = {"schema": MECHANISM_SCHEMA, "kind": "ptlens.mechanism", "n_problems": 2,
           "layers": [{"transition": "a→b", "layer": -1, "cka": 0.99, "act_rel_diff": 0.1, "logit_lens_kl": ""}],
           "transplant": [{"transition": "a→b", "row": "part", "partition": "groups", "part": "mlp",
                           "kl_recovered": 0.7, "kl_recovered_lo": 0.6, "kl_recovered_lo_fw": 0.55,
                           "acc_recovered": 0.5, "acc_recovered_lo": 0.25, "accuracy": None}]}
    (tmp_path / F.MECHANISM_SUMMARY).write_text(json.dumps(doc))
    (tmp_path / F.MECHANISM_ADL).write_text("{not json")
    m = load_mechanism(tmp_path)
    assert m.transitions == ["a→b"] and m.layers == [LayerRow("a→b", -1, 0.99, 0.1, None)] and m.adl is None
    (t,) = m.transplant
    assert (t.row, t.partition, t.part) == ("part", "groups", "mlp") and t.value("accuracy") is None
    assert t.lower("kl_recovered") == 0.55 and t.lower("acc_recovered") == 0.25  # family-wise bound where stored
    assert len(m.sha256) == 64
    (tmp_path / F.MECHANISM_SUMMARY).write_text(json.dumps({**doc, "schema": MECHANISM_SCHEMA + 1}))
    with pytest.raises(PtlensError, match="newer ptlens.*ptlens mechanism"):
        load_mechanism(tmp_path)
    (tmp_path / F.MECHANISM_SUMMARY).write_text("{")
    with pytest.raises(PtlensError, match="not valid JSON.*rerun `ptlens mechanism`"):
        load_mechanism(tmp_path)


def test_the_recorded_command_is_one_a_user_can_rerun():
    from ptlens.io import command_line

    assert command_line(["/venv/lib/python3.11/site-packages/ptlens/__main__.py", "run", "--limit", "4"]) == \
        ["ptlens", "run", "--limit", "4"]  # python -m ptlens
    assert command_line(["/venv/bin/ptlens", "weights"]) == ["ptlens", "weights"]
    assert command_line(["my_study.py", "--x"]) == ["my_study.py", "--x"]  # a script calling the library: as started
    assert command_line([]) == []
