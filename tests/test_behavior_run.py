"""End-to-end behaviour runs on tiny random chat models made here: reproducible, resumable, clear errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from ptlens.behavior.prompts import build_prompt, load_tokenizer, prompt_ids
from ptlens.behavior.sampling import finish_generation
from ptlens.behavior.grading import grade_flexible
from ptlens.behavior.config import BehaviorConfig
from ptlens.behavior.journal import RESULTS_FILE
from ptlens.behavior.run import run_behavior
from ptlens.results.store import load_samples
from ptlens.behavior.toy import char_tokenizer, make_toy_model
from ptlens.errors import PtlensError
from ptlens.resolve import resolve_lineage

torch.set_num_threads(1)

DIGITS = {c: 3.0 for c in "0123456789"}
STAGES = (("base", {"</s>": 1.0}), ("sft", {"4": 4.0, "</s>": 3.5}), ("rlvr", {"4": 5.0, "</s>": 5.0}))


def config(**kw) -> BehaviorConfig:
    base = dict(problems="", limit=None, n_samples=4, max_new_tokens=6, batch_size=8, n_boot=200, seed=1, device="cpu",
                engine="hf")
    base.update(kw)
    return BehaviorConfig(**base)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Three toy models that like digits, and later stages "4" and stopping early; 6 one-digit problems, most = 4."""
    root = tmp_path_factory.mktemp("behavior_models")
    specs = []
    for i, (name, bias) in enumerate(STAGES):
        make_toy_model(root / name, seed=i, logit_bias={**DIGITS, **bias}, noise=0.3)
        specs.append(f"{name}={root / name}")
    problems = root / "problems.jsonl"
    pairs = [(2, 2), (1, 3), (0, 4), (3, 1), (2, 3), (4, 4)]
    rows = [{"id": f"q{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)} for i, (a, b) in enumerate(pairs)]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "specs": specs, "problems": str(problems)}


@pytest.fixture(scope="module")
def reference(lab, tmp_path_factory):
    out = tmp_path_factory.mktemp("behavior_ref")
    lineage = resolve_lineage(models=lab["specs"])
    result = run_behavior(lineage, config(problems=lab["problems"]), out, progress=False)
    return {"out": out, "result": result, "lineage": lineage}


def _comparable(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in ("created", "versions")}


def test_end_to_end_outputs_and_reproducibility(lab, reference, tmp_path):
    out = reference["out"]
    res = json.loads((out / RESULTS_FILE).read_text())
    again = run_behavior(resolve_lineage(models=lab["specs"]), config(problems=lab["problems"]), tmp_path, progress=False)
    assert (out / "behavior" / "samples.jsonl").read_bytes() == (tmp_path / "behavior" / "samples.jsonl").read_bytes()
    assert _comparable(res) == _comparable(json.loads(json.dumps(again.results)))

    samples = load_samples(out)
    names = ["base", "sft", "rlvr"]
    assert len(samples) == 3 * 6 * 4
    assert len({(s.model, s.problem_id, s.sample) for s in samples}) == len(samples)
    for s in samples:
        assert set(s.cross_logprobs) == set(names) - {s.model}
        assert s.tokens == len(s.token_ids) >= 1 and s.mean_entropy > 0 and s.mean_logprob < 0
        assert s.truncated == (s.finish == "length")
        assert s.prompt.startswith("<s><|user|>\n") and s.prompt.endswith("<|assistant|>\n")
    assert list(res["models"]) == names
    assert res["settings"]["n_samples"] == 4 and res["settings"]["engine"] == "hf"
    assert "transformers" in res["versions"] and "math-verify" in res["versions"]
    assert [m["prompt_format"] for m in res["models_info"]] == ["chat_template"] * 3
    for name in names:
        mine = [s for s in samples if s.model == name]
        m = res["models"][name]["metrics"]
        assert m["accuracy"]["value"] == pytest.approx(sum(s.correct for s in mine) / len(mine))
        assert m["accuracy"]["lo"] <= m["accuracy"]["value"] <= m["accuracy"]["hi"]
        assert m["pass@1"]["value"] == pytest.approx(m["accuracy"]["value"])
        lp = sum(s.logprob_sum for s in mine) / sum(s.tokens for s in mine)
        assert res["cross_ppl"][name][name]["value"] == pytest.approx(math.exp(-lp))
        assert m["length_mean"]["value"] == pytest.approx(sum(s.tokens for s in mine) / len(mine))
        flex = [grade_flexible(s.response, s.gold) for s in mine]  # recorded beside the strict grade, per sample
        assert [(s.extracted_flexible, s.correct_flexible) for s in mine] == [(f.extracted, f.correct) for f in flex]
        assert res["models"][name]["accuracy_flexible"]["value"] == pytest.approx(sum(f.correct for f in flex) / len(mine))
        assert res["grading"]["models"][name] == {"samples": len(mine), "fallback_timeout": 0, "fallback_error": 0,
                                                  "no_answer": sum(s.extracted is None for s in mine)}
        assert all(s.grading_fallback is None for s in mine)
    acc = {n: res["models"][n]["metrics"]["accuracy"]["value"] for n in names}
    assert acc["base"] < acc["rlvr"]  # the later toy stages say "4" more often
    assert res["models"]["rlvr"]["metrics"]["length_mean"]["value"] < res["models"]["base"]["metrics"]["length_mean"]["value"]
    assert [(d["a"], d["b"]) for d in res["consecutive"]] == [("base", "sft"), ("sft", "rlvr")]
    assert sum(res["consecutive"][0]["solved_sets"].values()) == 6
    for f in ("pass_at_k", "accuracy_histogram", "entropy_length", "calibration", "cross_ppl_heatmap"):
        assert (out / "behavior" / f"{f}.png").stat().st_size > 1000


def test_scores_match_a_direct_forward_pass(lab, reference):
    """The stored log-probs and entropies equal an independent teacher-forced computation."""
    from transformers import AutoModelForCausalLM

    samples = [s for s in load_samples(reference["out"]) if s.model == "base"][:3]
    path = lab["root"] / "base"
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    tok = load_tokenizer(path, "base")
    other = AutoModelForCausalLM.from_pretrained(str(lab["root"] / "sft"), dtype=torch.float32).eval()
    for s in samples:
        p = tok(s.prompt, add_special_tokens=False).input_ids
        ids = torch.tensor([p + s.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, len(p) - 1:-1].float(), -1)
            logp_b = torch.log_softmax(other(ids).logits[0, len(p) - 1:-1].float(), -1)
        idx = torch.tensor(s.token_ids)[:, None]
        assert s.logprob_sum == pytest.approx(float(logp.gather(1, idx).sum()), abs=1e-4)
        assert s.entropy_sum == pytest.approx(float(-(logp.exp() * logp).sum()), abs=1e-4)
        assert s.cross_logprobs["sft"]["logprob_sum"] == pytest.approx(float(logp_b.gather(1, idx).sum()), abs=1e-4)


CHILD = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from pathlib import Path
    from ptlens.behavior.config import BehaviorConfig
    from ptlens.behavior.run import run_behavior
    from ptlens.resolve import resolve_lineage
    out, marker, problems, *specs = sys.argv[1:]
    def on_batch(model, index):
        if (model, index) == ("sft", 1):
            Path(marker).write_text("flushed")
            time.sleep(600)
    cfg = BehaviorConfig(problems=problems, n_samples=4, max_new_tokens=6, batch_size=8, n_boot=200, seed=1,
                         device="cpu", engine="hf")
    run_behavior(resolve_lineage(models=specs), cfg, out, progress=False, on_batch=on_batch)
""")


def test_killed_run_resumes_without_loss_or_duplicates(lab, reference, tmp_path):
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "out"), str(marker), lab["problems"], *lab["specs"]],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    journal = tmp_path / "out" / "behavior" / "samples.jsonl"
    lines = journal.read_text().splitlines()
    assert len(lines) == 24 + 16  # all of base (24 samples) and sft's first two batches of 8
    assert not (tmp_path / "out" / RESULTS_FILE).exists()
    run_behavior(resolve_lineage(models=lab["specs"]), config(problems=lab["problems"]), tmp_path / "out", progress=False)
    assert journal.read_bytes() == (reference["out"] / "behavior" / "samples.jsonl").read_bytes()


def test_torn_last_line_is_cut_and_the_batch_redone(lab, reference, tmp_path):
    class Stop(Exception):
        pass

    def stop(model, index):
        if (model, index) == ("base", 1):
            raise Stop

    with pytest.raises(Stop):
        run_behavior(resolve_lineage(models=lab["specs"]), config(problems=lab["problems"]), tmp_path, progress=False,
                     on_batch=stop)
    journal = tmp_path / "behavior" / "samples.jsonl"
    assert len(journal.read_text().splitlines()) == 16
    with journal.open("a") as f:
        f.write('{"model": "base", "label": "base", "problem_id": "q4", "sam')
    run_behavior(resolve_lineage(models=lab["specs"]), config(problems=lab["problems"]), tmp_path, progress=False)
    assert journal.read_bytes() == (reference["out"] / "behavior" / "samples.jsonl").read_bytes()


def test_other_settings_are_refused_unless_overwrite(lab, reference, tmp_path):
    lineage = resolve_lineage(models=lab["specs"][:2])
    run_behavior(lineage, config(problems=lab["problems"], limit=2, n_samples=2, figures=False), tmp_path, progress=False)
    with pytest.raises(PtlensError, match="other settings.*temperature"):
        run_behavior(lineage, config(problems=lab["problems"], limit=2, n_samples=2, temperature=1.0), tmp_path, progress=False)
    r = run_behavior(lineage, config(problems=lab["problems"], limit=2, n_samples=2, temperature=1.0, overwrite=True,
                                     figures=False), tmp_path, progress=False)
    assert r.results["settings"]["temperature"] == 1.0


def test_bad_inputs_are_one_line_errors(lab, tmp_path):
    make_toy_model(tmp_path / "notok", tokenizer=False)
    with pytest.raises(PtlensError, match="model notok .*no tokenizer"):
        run_behavior(resolve_lineage(models=[lab["specs"][0], f"notok={tmp_path / 'notok'}"]),
                     config(problems="builtin", limit=2), tmp_path / "o1", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q"}\n')
    with pytest.raises(PtlensError, match="bad.jsonl.*line 1: missing answer"):
        run_behavior(resolve_lineage(models=lab["specs"][:2]), config(problems=str(bad)), tmp_path / "o2", progress=False)
    make_toy_model(tmp_path / "mute", logit_bias={"</s>": 60.0}, noise=0.0)
    with pytest.raises(PtlensError, match="model mute: every one of its 4 responses is empty"):
        run_behavior(resolve_lineage(models=[f"mute={tmp_path / 'mute'}", lab["specs"][0]]),
                     config(problems=lab["problems"], limit=2, n_samples=2), tmp_path / "o3", progress=False)
    with pytest.raises(PtlensError, match="max-new-tokens"):
        run_behavior(resolve_lineage(models=lab["specs"][:2]), config(max_new_tokens=0), tmp_path / "o4", progress=False)


def test_plain_prompt_and_stop_strings(tmp_path):
    tok = char_tokenizer(chat_template=None)
    prompt = build_prompt(tok, "What is 2 + 2?", "Box it.")
    assert prompt.text == "Question: What is 2 + 2?\nBox it.\nAnswer:" and not prompt.chat
    assert tok.decode(prompt_ids(tok, prompt), skip_special_tokens=True) == prompt.text
    ids = tok(" 4\nQuestion: next", add_special_tokens=False).input_ids
    g = finish_generation(tok, ids, prompt.stop, 50, {tok.eos_token_id}, tok.pad_token_id)
    assert g.text == " 4" and g.finish == "stop"
    assert tok.decode(g.token_ids) == " 4\nQuestion:"
    g = finish_generation(tok, ids[:3] + [tok.eos_token_id, 5, 6], prompt.stop, 50, {tok.eos_token_id}, tok.pad_token_id)
    assert g.text == " 4\n" and g.finish == "eos" and g.token_ids[-1] == tok.eos_token_id
    g = finish_generation(tok, ids[:4], prompt.stop, 4, {tok.eos_token_id}, tok.pad_token_id)
    assert g.finish == "length"


def test_plain_format_model_end_to_end(lab, tmp_path):
    make_toy_model(tmp_path / "plain", seed=5, chat_template=None, logit_bias={**DIGITS, "</s>": 3.0}, noise=0.3)
    r = run_behavior(resolve_lineage(models=[f"plain={tmp_path / 'plain'}", lab["specs"][2]]),
                     config(problems=lab["problems"], limit=2, n_samples=2, figures=False), tmp_path / "o", progress=False)
    fmt = {m["name"]: m["prompt_format"] for m in r.results["models_info"]}
    assert fmt == {"plain": "plain", "rlvr": "chat_template"}
    plain = [s for s in load_samples(tmp_path / "o") if s.model == "plain"]
    assert all(s.prompt.startswith("Question: ") and s.prompt.endswith("\nAnswer:") for s in plain)


def test_instruction_declared_by_the_checkpoint_and_pickle_refusal(lab, tmp_path):
    from ptlens.behavior.hf_model import check_weights
    from ptlens.behavior.prompts import DEFAULT_INSTRUCTION, model_instruction

    make_toy_model(tmp_path / "bare", seed=3, logit_bias={**DIGITS, "</s>": 0.0}, noise=0.3)
    (tmp_path / "bare" / "ptlens_stage.json").write_text(json.dumps({"facts": {}, "instruction": ""}))
    assert model_instruction(tmp_path / "bare", "auto") is None
    assert model_instruction(lab["root"] / "base", "auto") == DEFAULT_INSTRUCTION
    assert model_instruction(tmp_path / "bare", "Think.") == "Think."
    r = run_behavior(resolve_lineage(models=[f"bare={tmp_path / 'bare'}", lab["specs"][0]]),
                     config(problems=lab["problems"], limit=1, n_samples=1, figures=False), tmp_path / "o", progress=False)
    assert [m["instruction"] for m in r.results["models_info"]] == [None, DEFAULT_INSTRUCTION]
    prompts = {s.model: s.prompt for s in load_samples(tmp_path / "o")}
    assert prompts["bare"] == "<s><|user|>\nWhat is 2 + 2?\n<|assistant|>\n"
    assert DEFAULT_INSTRUCTION in prompts["base"]

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(PtlensError, match="--allow-pickle"):
        check_weights(pickled, "pickled", allow_pickle=False)
    check_weights(pickled, "pickled", allow_pickle=True)
