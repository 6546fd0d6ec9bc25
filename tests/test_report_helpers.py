"""Stored results for the report tests: constructed summary / behaviour dicts with known answers, and real ones.

No tests here; the test_report_* modules import these builders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=\"document.title='pwned'\">"


# ---------------------------------------------------------------- weights


def _row(transition: str, key: list, delta2: float, a2: float, **extra) -> dict:
    d, a = math.sqrt(delta2), math.sqrt(a2)
    return {"transition": transition, "key": key, "tensors": 1, "norm_a": a, "norm_b": a, "delta_norm": d,
            "rel_change": d / a if a else None, **extra}


def weights_summary(labels: list[str], stages: list[dict], facts: list[dict] | None = None,
                    cosines: dict[tuple[int, int], float] | None = None, layers: int = 4,
                    names: list[str] | None = None, revisions: list[str | None] | None = None,
                    spans: dict[tuple[int, int], dict] | None = None, steps: list[int | None] | None = None,
                    span_cosines: dict[tuple[str, str], float] | None = None) -> dict:
    """A summary.json with consecutive transitions described by ``stages[i]`` (for checkpoint i → i+1):

    rel: relative change of every layer (× ``layer_scale[l]``) and the head (× ``head``); changed: changed share;
    att / mlp: group rel_change multipliers; stable_rank; principal_overlap; ``<x>_null`` for changed,
    stable_rank, principal_overlap: the null fields of the scan (``changed_exact_null`` …). Every tensor set has
    ‖W_A‖ = 1 per layer. Cumulative transitions from the first checkpoint are added with the given ``cum_rel``
    (else the sum of steps). ``spans`` adds stage-span transitions (kind "stage") a → b described like a step;
    ``span_cosines`` adds Δ cosines between transitions by name; ``steps``: each checkpoint's recorded step.
    """
    names = names or labels
    facts = facts or [{} for _ in labels]
    revisions = revisions or [None] * len(labels)
    steps = steps or [None] * len(labels)
    cps = [{"label": lab, "spec": f"/models/{n}", "path": f"/models/{n}", "repo_id": None, "revision": rev,
            "resolved_revision": None, "name": n, "facts": f, **({"step": st} if st is not None else {})}
           for lab, n, f, rev, st in zip(labels, names, facts, revisions, steps)]
    transitions, agg = [], {k: [] for k in ("model", "model_no_embed_head", "group", "kind", "layer", "layer_group",
                                            "layer_kind", "delta_cosine_model", "delta_cosine_model_no_embed_head",
                                            "delta_cosine_group", "delta_cosine_layer")}

    def add(name: str, a: int, b: int, kind: str, st: dict) -> None:
        transitions.append({"name": name, "a": a, "b": b, "kind": kind})
        rel = st["rel"]
        scales = st.get("layer_scale") or [1.0] * layers
        head = st.get("head", 1.0)
        extra = {"changed_exact": st.get("changed", 0.5), "changed_tol": st.get("changed", 0.5), "rms_change": rel / 10}
        if "stable_rank" in st:
            extra["stable_rank_wmean"] = st["stable_rank"]
        if "principal_overlap" in st:
            extra["principal_overlap_wmean"] = st["principal_overlap"]
        for key, field_ in (("changed_null", "changed_exact_null"), ("changed_null", "changed_tol_null"),
                            ("stable_rank_null", "stable_rank_wmean_null"),
                            ("principal_overlap_null", "principal_overlap_wmean_null")):
            if key in st:
                extra[field_] = st[key]
        extra["entries"] = st.get("entries", 1_000_000)
        d_layers = [(rel * s) ** 2 for s in scales]
        d_head = (rel * head) ** 2
        for i, d2 in enumerate(d_layers):
            agg["layer"].append(_row(name, [i], d2, 1.0, changed_exact=extra["changed_exact"]))
        agg["group"].append(_row(name, ["head"], d_head, 1.0, changed_exact=extra["changed_exact"]))
        agg["group"].append(_row(name, ["attention"], (rel * st.get("att", 1.0)) ** 2, 1.0,
                                 changed_exact=extra["changed_exact"]))
        agg["group"].append(_row(name, ["mlp"], (rel * st.get("mlp", 1.0)) ** 2, 1.0, changed_exact=extra["changed_exact"]))
        total = sum(d_layers) + d_head
        agg["model"].append(_row(name, [], total, layers + 1.0, **extra))
        agg["model_no_embed_head"].append(_row(name, [], sum(d_layers), float(layers), **extra))

    for i, st in enumerate(stages):
        add(f"{names[i]}→{names[i + 1]}", i, i + 1, "consecutive", st)
    for j in range(2, len(names)):
        steps = stages[:j]
        cum = {"rel": steps[-1].get("cum_rel", sum(s["rel"] for s in steps)), "changed": max(s.get("changed", .5) for s in steps)}
        add(f"{names[0]}→{names[j]}", 0, j, "cumulative", cum)
    for (a, b), st in (spans or {}).items():
        add(f"{names[a]}→{names[b]}", a, b, "stage", st)
    cons = [t["name"] for t in transitions if t["kind"] == "consecutive"]
    for (i, j), c in (cosines or {}).items():
        agg["delta_cosine_model"].append({"t1": cons[i], "t2": cons[j], "key": [], "tensors": 1, "delta_cosine": c})
    for (t1, t2), c in (span_cosines or {}).items():
        agg["delta_cosine_model"].append({"t1": t1, "t2": t2, "key": [], "tensors": 1, "delta_cosine": c})
    return {"ptlens": "weights", "versions": {"ptlens": "0.1.0"}, "command": ["ptlens", "weights"],
            "lineage": {"preset": None, "checkpoints": cps},
            "settings": {"spectral": "topk", "k": 16, "tolerance": 1e-5, "device_used": "cpu"},
            "transitions": transitions, "aggregates": agg, "added_rows": [], "tied_embeddings": {},
            "missing_tensors": {}, "skipped_tensors": {}, "nonfinite": [], "tensors_scanned": 1, "bytes_read": 1,
            "seconds": 1.0, "throughput_gb_per_s": None, "figures": {}}


def four_stage(sft: dict, rlvr: dict, dpo: dict | None = None, **kw) -> dict:
    return weights_summary(["base", "sft", "dpo", "rlvr"], [sft, dpo or {"rel": 0.005}, rlvr], **kw)


# ---------------------------------------------------------------- behaviour


def est(value, lo=None, hi=None, p=None) -> dict:
    """An estimate; with ``p`` a paired difference carrying its sign-flip p-value."""
    out = {"value": value, "lo": value if lo is None else lo, "hi": value if hi is None else hi}
    return out if p is None else {**out, "p": p}


def behaviour_results(models: dict[str, dict[str, dict]], diffs: dict[tuple[str, str], dict[str, dict]] | None = None,
                      ks=(1, 4), n_problems: int = 10) -> dict:
    """A model_comparison_results.json with the given per-model metric estimates and stored paired differences."""
    names = list(models)
    return {
        "schema": 1, "kind": "ptlens.behavior", "created": "2026-01-01T00:00:00+0000",
        "settings": {"seed": 0, "n_samples": 4, "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 64},
        "versions": {"ptlens": "0.1.0"},
        "lineage": {"preset": None, "checkpoints": [{"label": n, "name": n, "spec": n, "facts": {}} for n in names]},
        "models_info": [{"name": n, "label": n, "prompt_format": "plain", "instruction": None, "stop_strings": []}
                        for n in names],
        "problems": [], "ks": list(ks), "bootstrap": {"resamples": 200, "seed": 0, "level": 0.95, "unit": "problem"},
        "models": {n: {"metrics": m, "n_problems": n_problems, "n_samples": 4 * n_problems} for n, m in models.items()},
        "cross_ppl": {}, "cross_kl": {},
        "consecutive": [{"a": a, "b": b, "difference": d, "solved_sets": {"a_only": 1, "b_only": 2, "both": 3, "neither": 4}}
                        for (a, b), d in (diffs or {}).items()],
        "per_problem": {},
    }


def neutral_metrics(**over) -> dict[str, dict]:
    m = {"accuracy": est(0.5, 0.4, 0.6), "pass@4": est(0.7, 0.6, 0.8), "distinct_answers": est(2.0, 1.8, 2.2),
         "answer_confidence": est(0.6, 0.55, 0.65), "length_mean": est(200.0, 190.0, 210.0),
         "distinct_4": est(0.5, 0.45, 0.55), "token_entropy": est(0.5, 0.48, 0.52), "ece": est(0.1, 0.05, 0.15)}
    m.update(over)
    return m


def zero_diffs(**over) -> dict[str, dict]:
    d = {k: est(0.0, -0.01, 0.01, p=1.0) for k in neutral_metrics()}
    d.update(over)
    return d


# ---------------------------------------------------------------- real results on disk


def sample_rows(models: list[str], problems: list[dict], n: int = 4, special: dict | None = None) -> list[dict]:
    """samples.jsonl rows: model i answers correctly on samples < i + 1 (so later models are better)."""
    rows = []
    for mi, m in enumerate(models):
        for p in problems:
            for s in range(n):
                ok = s <= mi
                text = f"The answer is \\boxed{{{p['answer'] if ok else '7'}}}." + " step" * (3 + mi * s)
                if special and (m, p["id"], s) in special:
                    text = special[(m, p["id"], s)]
                rows.append({"model": m, "label": m, "problem_id": p["id"], "sample": s, "prompt": p["question"],
                             "response": text, "gold": p["answer"], "extracted": p["answer"] if ok else "7",
                             "answer_key": p["answer"] if ok else "7", "correct": ok, "tokens": 5 + mi * s,
                             "truncated": False, "finish": "eos", "seed": 1, "token_ids": [1, 2, 3],
                             "logprob_sum": -1.0 - s, "mean_logprob": -0.2, "entropy_sum": 2.0 + mi,
                             "mean_entropy": 0.4, "cross_logprobs": {}})
    return rows


def real_behaviour(models: list[str], n_problems: int = 6, n: int = 4, special: dict | None = None) -> tuple[dict, list[dict]]:
    """Results computed by the behaviour engine's own metrics from constructed samples (no model is run)."""
    from ptlens.behavior.metrics import ProblemSamples, compare_models

    problems = [{"id": f"p{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(n_problems)]
    rows = sample_rows(models, problems, n, special)
    ps = {m: [ProblemSamples(problem_id=p["id"],
                             correct=[r["correct"] for r in rows if r["model"] == m and r["problem_id"] == p["id"]],
                             keys=[r["answer_key"] for r in rows if r["model"] == m and r["problem_id"] == p["id"]],
                             texts=[r["response"] for r in rows if r["model"] == m and r["problem_id"] == p["id"]],
                             lengths=[r["tokens"] for r in rows if r["model"] == m and r["problem_id"] == p["id"]],
                             truncated=[False] * n,
                             logprob_sums=[r["logprob_sum"] for r in rows if r["model"] == m and r["problem_id"] == p["id"]],
                             entropy_sums=[r["entropy_sum"] for r in rows if r["model"] == m and r["problem_id"] == p["id"]])
              for p in problems] for m in models}
    metrics = compare_models(ps, n_boot=200, seed=0)
    results = {"schema": 1, "kind": "ptlens.behavior", "created": "2026-01-01T00:00:00+0000",
               "settings": {"problems": "constructed", "seed": 0, "n_samples": n, "temperature": 0.6, "top_p": 0.95,
                            "max_new_tokens": 64, "n_boot": 200},
               "versions": {"ptlens": "0.1.0"},
               "lineage": {"preset": None, "checkpoints": [{"label": m.split("#")[0].split("@")[0], "name": m, "spec": m,
                                                            "facts": {}} for m in models]},
               "models_info": [{"name": m, "label": m, "prompt_format": "plain", "instruction": None, "stop_strings": []}
                               for m in models],
               "problems": problems, **metrics}
    return results, rows


def write_behaviour(out: Path, results: dict, rows: list[dict] | None, figures: bool = True) -> None:
    """The files ``ptlens behavior`` leaves: results (with its figures listed), samples.jsonl, figures."""
    out.mkdir(parents=True, exist_ok=True)
    if rows is not None:
        (out / "behavior").mkdir(exist_ok=True)
        (out / "behavior" / "samples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        if figures:
            from ptlens.behavior.figures import write_figures
            from ptlens.results.store import SampleRecord

            paths = write_figures(results, [SampleRecord.from_dict(r) for r in rows], out / "behavior")
            results = {**results, "figures": [str(p.relative_to(out)) for p in paths]}
    (out / "model_comparison_results.json").write_text(json.dumps(results, indent=2))


def real_weights(out: Path, root: Path, trajectory: bool = False) -> dict:
    """A real scan of a tiny synthetic lineage written to ``out`` (weights/summary.json, figures)."""
    torch = pytest.importorskip("torch")
    from ptlens.resolve import resolve_lineage
    from ptlens.synth import LlamaShape, PlantedStage, make_lineage
    from ptlens.weights import ScanConfig, scan_lineage
    from ptlens.weights.outputs import write_outputs

    stages = [PlantedStage("sft", 2e-2), PlantedStage("dpo", 4e-3), PlantedStage("rlvr", 2e-3, density=0.3)]
    if trajectory:
        stages.append(PlantedStage("rlvr2", 2e-3, density=0.3))
    lin = make_lineage(root, LlamaShape(vocab=128, hidden=32, intermediate=64, layers=2, heads=4, kv_heads=2),
                       stages=stages, dtype=torch.bfloat16)
    args = lin.model_args()
    if trajectory:  # rlvr and rlvr2 are two checkpoints of one RLVR stage
        args = [a.replace("rlvr2=", "rlvr=") for a in args]
    result = scan_lineage(resolve_lineage(models=args), ScanConfig(spectral="topk", workers=1))
    return write_outputs(result, out)


# ---------------------------------------------------------------- a real headless Chromium


def find_chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no extra packages.

    Collects console messages, exceptions, log entries (CSP violations land there) and dialogs of one page.
    """

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--mute-audio", "--remote-debugging-pipe", "--window-size=1400,900")

    def __init__(self, binary: str, profile: Path):
        import os
        import subprocess

        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds():  # the protocol expects fd 3 (commands in) and fd 4 (replies out) in the child
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen([binary, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=fds, pass_fds=(3, 4))
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        import os

        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - already gone
            pass
        try:
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass

    def _read(self, deadline: float) -> dict:
        import os
        import select
        import time

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        import os
        import time

        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        import time

        deadline = time.monotonic() + timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._read(deadline)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def open(self, url: str) -> str:
        """Attach to the page, enable the domains that report errors, load ``url``; returns the session id."""
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(domain, session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired")
        return session

    def evaluate(self, session: str, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def errors(self) -> list[dict]:
        """Console errors, uncaught exceptions, error log entries (e.g. CSP violations) and dialogs seen so far."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown" or m == "Page.javascriptDialogOpening":
                out.append(e)
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(e)
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(e)
        return out
