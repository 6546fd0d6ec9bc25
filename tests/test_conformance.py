"""The presets' architectures as a conformance suite: tiny random lineages of each family (conformance_helpers), every
command run on them, and the planted changes read back from the outputs.

Families and lineage shapes: Llama-3.1 (llama3 RoPE, untied; sft adds 8 vocabulary rows and tokens), OLMo 2
(q_norm/k_norm), Qwen2 (q/k/v biases; tied base → untied sft, as Qwen2.5-Math → R1-Distill), Mistral (sliding
window; every checkpoint sharded with an index), Mixtral (experts stored per expert, fused by transformers), and
Mamba (not a transformer: a warning, and ``ptlens mechanism`` refuses).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conformance_helpers import ADDED, HEAD_DELTA, TINY, VOCAB, make_lineage, planted_name
from ptlens.cli import app
from ptlens.weights.names import architecture_note, parse_name

runner = CliRunner()
FAST = ["--limit", "4", "--n-samples", "2", "--max-new-tokens", "16", "--engine", "hf"]
LINEAGES = {"llama31": dict(resize=True), "olmo2": {}, "qwen2": dict(untie=True), "mistral": dict(shards=True),
            "mixtral": {}}


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- classes by module role (pure)


@pytest.mark.parametrize("name,kind,group", [
    ("model.layers.0.self_attn.q_norm.weight", "q_norm", "attention"),  # OLMo 2, Gemma 3, Qwen3
    ("model.layers.0.self_attn.k_norm.weight", "k_norm", "attention"),
    ("transformer.wpe.weight", "wpe", "embedding"),  # GPT-2 positions
    ("backbone.embeddings.weight", "embeddings", "embedding"),  # Mamba
    ("backbone.norm_f.weight", "norm_f", "norm"),
    ("backbone.layers.0.mixer.in_proj.weight", "in_proj", "other"),
    ("model.layers.0.block_sparse_moe.gate.weight", "router", "mlp"),  # Mixtral router
    ("model.layers.0.block_sparse_moe.experts.3.w1.weight", "w1", "mlp"),
    ("model.layers.0.mlp.gate.weight", "router", "mlp"),  # Qwen2-MoE / OLMoE router
    ("model.layers.0.mlp.shared_expert_gate.weight", "router", "mlp"),
    ("model.layers.0.mlp.experts.7.down_proj.weight", "down_proj", "mlp"),
    ("model.layers.0.mlp.gate_proj.weight", "gate_proj", "mlp"),
    ("transformer.h.0.attn.c_proj.weight", "c_proj", "attention"),
])
def test_tensor_roles_follow_modules(name, kind, group):
    r = parse_name(name)
    assert (r.kind, r.group) == (kind, group)


def test_position_table_is_not_a_vocabulary():
    assert not parse_name("transformer.wpe.weight").is_vocab
    assert parse_name("transformer.wte.weight").is_vocab and parse_name("backbone.embeddings.weight").is_vocab


def test_architecture_note_only_without_attention_and_mlp():
    mamba = ["backbone.embeddings.weight", "backbone.layers.0.mixer.in_proj.weight", "backbone.layers.0.mixer.A_log",
             "backbone.layers.0.norm.weight", "backbone.norm_f.weight"]
    note = architecture_note(mamba)
    assert note is not None and "attention/MLP questions do not apply" in note and "in_proj" in note
    assert architecture_note(["model.layers.0.self_attn.q_proj.weight", "model.norm.weight"]) is None


# ---------------------------------------------------------------- every command on every family


@pytest.fixture(scope="module", params=list(LINEAGES))
def family_run(request, tmp_path_factory):
    fam = request.param
    root = tmp_path_factory.mktemp(fam)
    args = make_lineage(root, fam, **LINEAGES[fam])
    out = root / "out"
    res = runner.invoke(app, ["run", "--models", *args, "--output-dir", str(out), "--spectral", "off", *FAST])
    return fam, root, args, out, res


@pytest.mark.slow
def test_run_finishes_and_report_rebuilds(family_run):
    fam, root, args, out, res = family_run
    assert res.exit_code == 0, res.output
    for f in ("report.html", "report.md", "weights/tensors.csv", "model_comparison_results.json",
              "mechanism/transplant.csv"):
        assert (out / f).is_file(), f
    html = (out / "report.html").read_text()
    again = runner.invoke(app, ["report", str(out)])
    assert again.exit_code == 0, again.output
    assert (out / "report.html").read_text() == html


@pytest.mark.slow
def test_weights_recover_the_planted_changes(family_run):
    """The planted tensor (×2 per stage) has rel_change exactly 1 per stage and 3 over two; nothing else moved,
    except the head of the tied → untied lineage, compared as the base's embedding (rel_change HEAD_DELTA)."""
    fam, _, _, out, res = family_run
    assert res.exit_code == 0, res.output
    rows = _csv(out / "weights" / "tensors.csv")
    planted = planted_name(fam)
    by = {(r["tensor"], r["transition"]): r for r in rows}
    assert float(by[(planted, "base→sft")]["rel_change"]) == 1.0
    assert float(by[(planted, "sft→rlvr")]["rel_change"]) == 1.0
    assert float(by[(planted, "base→rlvr")]["rel_change"]) == pytest.approx(3.0, abs=1e-12)  # ‖4W − W‖/‖W‖
    moved = {(r["tensor"], r["transition"]) for r in rows if float(r["delta_norm"]) != 0}  # (zero-init biases: no rel_change)
    expect = {(planted, t) for t in ("base→sft", "sft→rlvr", "base→rlvr")}
    if fam == "qwen2":
        head = [by[("lm_head.weight", t)] for t in ("base→sft", "sft→rlvr", "base→rlvr")]
        assert float(head[0]["rel_change"]) == pytest.approx(HEAD_DELTA, rel=0.01)
        assert float(head[1]["rel_change"]) == 0.0
        assert float(head[2]["rel_change"]) == pytest.approx(HEAD_DELTA, rel=0.01)
        expect |= {("lm_head.weight", "base→sft"), ("lm_head.weight", "base→rlvr")}
    assert moved == expect
    summary = json.loads((out / "weights" / "summary.json").read_text())
    assert summary["missing_tensors"] == {}
    if fam == "llama31":
        added = {(a["tensor"], a["transition"]): a for a in summary["added_rows"]}
        assert added[("model.embed_tokens.weight", "base→sft")]["added_rows"] == ADDED
        assert added[("lm_head.weight", "base→sft")]["rows_a"] == VOCAB
    groups = {r["tensor"]: (r["kind"], r["group"]) for r in rows}
    if fam == "olmo2":
        assert groups["model.layers.0.self_attn.q_norm.weight"] == ("q_norm", "attention")
    if fam == "mixtral":
        assert groups["model.layers.0.block_sparse_moe.gate.weight"] == ("router", "mlp")
        experts = [t for t in groups if ".experts." in t]
        assert len(experts) == 2 * 4 * 3 and all(groups[t][1] == "mlp" for t in experts)
    if fam == "qwen2":
        assert summary["tied_embeddings"] == {"base": True, "sft": False, "rlvr": False}
        assert groups["model.layers.0.self_attn.q_proj.bias"] == ("q_proj", "attention")


@pytest.mark.slow
def test_transplants_cover_every_tensor_and_match_the_scan(family_run):
    """Each part's share of ‖ΔW‖² equals the scan's delta norms summed over its tensors; every stored tensor (MoE
    experts one by one) is transplanted; the MLP part alone turns A into B exactly where only the MLP changed."""
    fam, root, _, out, res = family_run
    assert res.exit_code == 0, res.output
    scan = {(r["tensor"], r["transition"]): float(r["delta_norm"]) ** 2 for r in _csv(out / "weights" / "tensors.csv")}
    summary = json.loads((out / "mechanism" / "summary.json").read_text())
    assert not [n for n in summary["notes"] if "not transplanted" in n], summary["notes"]
    from ptlens.weights.index import CheckpointIndex

    stored = [n for n, t in CheckpointIndex.from_dir(root / "sft").tensors.items() if t.is_float]
    rows = _csv(out / "mechanism" / "transplant.csv")
    for t in ("base→sft", "sft→rlvr"):
        mine = [r for r in rows if r["transition"] == t]
        model_b = next(r for r in mine if r["row"] == "model" and r["part"] == t.split("→")[1])
        assert int(model_b["tensors"]) == len(stored)
        total = sum(v for (n, tr), v in scan.items() if tr == t)
        mlp = next(r for r in mine if r["part"] == "mlp")
        mlp_sq = sum(v for (n, tr), v in scan.items() if tr == t and parse_name(n).group == "mlp")
        assert float(mlp["delta_share"]) == pytest.approx(mlp_sq / total, abs=1e-6)
        if not (fam == "qwen2" and t == "base→sft"):
            assert float(mlp["delta_share"]) == 1.0
            assert float(mlp["kl_to_b"]) == 0.0  # A + ΔW[mlp] is B, bit for bit
            assert float(next(r for r in mine if r["part"] == "attention")["kl_recovered"]) == 0.0
        else:  # the head changed too: the tied base's head is its embedding
            emb = next(r for r in mine if r["part"] == "embedding+head")
            assert float(emb["delta_share"]) == pytest.approx(1 - mlp_sq / total, abs=1e-6)
            assert any("ties its head to its embedding" in n for n in summary["notes"])


@pytest.mark.slow
def test_added_vocabulary_is_left_out_and_counted(family_run):
    """sft's and rlvr's answers holding ids ≥ 103 cannot be scored by the base: counted, left out, reported; the
    families whose stages share one vocabulary have nothing unscorable."""
    fam, _, _, out, res = family_run
    assert res.exit_code == 0, res.output
    samples = [json.loads(x) for x in (out / "behavior" / "samples.jsonl").read_text().splitlines() if x.strip()]
    results = json.loads((out / "model_comparison_results.json").read_text())
    want = {}
    for s in samples:
        n = sum(t >= VOCAB for t in s["token_ids"])
        if n:
            d = want.setdefault(s["model"], {"base": {"samples": 0, "tokens": 0}})["base"]
            d["samples"] += 1
            d["tokens"] += n
    if fam != "llama31":  # no stage added rows
        assert want == {} and results["unscorable"] == {}
        return
    assert want and "base" not in want
    assert results["unscorable"] == want
    assert math.isfinite(results["cross_ppl"]["sft"]["base"]["value"])
    assert "could not score" in (out / "report.md").read_text()


# ---------------------------------------------------------------- single commands and units


def test_weights_and_mechanism_on_tied_to_untied(tmp_path):
    """No --allow-missing needed: the tied base's head is compared as its embedding; mechanism base→sft runs."""
    args = make_lineage(tmp_path, "qwen2", ("base", "sft"), untie=True)
    res = runner.invoke(app, ["weights", "--models", *args, "--output-dir", str(tmp_path / "w"), "--spectral", "off",
                              "--no-figures"])
    assert res.exit_code == 0, res.output
    head = next(r for r in _csv(tmp_path / "w" / "weights" / "tensors.csv") if r["tensor"] == "lm_head.weight")
    assert float(head["rel_change"]) == pytest.approx(HEAD_DELTA, rel=0.01) and head["rows_a"] == str(VOCAB)
    assert "lm_head" in (tmp_path / "w" / "weight_analysis_report.md").read_text()
    res = runner.invoke(app, ["mechanism", "--models", *args, "--output-dir", str(tmp_path / "m"), "--limit", "2",
                              "--max-new-tokens", "8", "--no-transplant"])
    assert res.exit_code == 0, res.output


def _mamba(root: Path) -> list[str]:
    from transformers import AutoTokenizer, MambaConfig, MambaForCausalLM

    tok = AutoTokenizer.from_pretrained(TINY / "sft")
    torch.manual_seed(0)
    m = MambaForCausalLM(MambaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=2)).to(torch.bfloat16)
    args = []
    for label in ("base", "sft"):
        m.save_pretrained(root / label)
        tok.save_pretrained(root / label)
        args.append(f"{label}={root / label}")
        with torch.no_grad():
            m.backbone.layers[1].mixer.out_proj.weight.mul_(2)
    return args


def test_mamba_gets_a_warning_and_mechanism_refuses(tmp_path):
    args = _mamba(tmp_path)
    res = runner.invoke(app, ["weights", "--models", *args, "--output-dir", str(tmp_path / "w"), "--spectral", "off",
                              "--no-figures"])
    assert res.exit_code == 0, res.output
    assert "attention/MLP questions do not apply" in " ".join(res.output.split())
    rows = {r["tensor"]: r for r in _csv(tmp_path / "w" / "weights" / "tensors.csv")}
    assert rows["backbone.embeddings.weight"]["group"] == "embedding"
    assert rows["backbone.norm_f.weight"]["group"] == "norm"
    assert float(rows["backbone.layers.1.mixer.out_proj.weight"]["rel_change"]) == 1.0
    res = runner.invoke(app, ["mechanism", "--models", *args, "--output-dir", str(tmp_path / "m"), "--limit", "2"])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "attention/MLP questions do not apply" in lines[0] and "Traceback" not in res.output


def test_scoring_ids_beyond_the_vocabulary(tmp_path):
    """A response holding ids the scorer cannot embed is left out (counted); the others score as if alone."""
    from ptlens.behavior.hf_model import HFModel
    from ptlens.behavior.prompts import load_tokenizer

    args = make_lineage(tmp_path, "llama31", ("base", "sft"), resize=True)
    base = Path(args[0].split("=", 1)[1])
    tok = load_tokenizer(base, "base")
    prompt = tok("What is 2 + 3?").input_ids
    pairs = [(prompt, [40, 41, 42]), (prompt, [40, VOCAB + 1, 42, VOCAB + 3]), (prompt + [VOCAB], [40]),
             (prompt, [50, 51])]
    with HFModel(base, tok, "cpu") as m:
        assert m.embed_rows == VOCAB
        out = m.score(pairs)
        alone = m.score([pairs[0], pairs[3]])
    assert [s.unscorable for s in out] == [0, 2, 1, 0]
    assert (out[1].tokens, out[1].logprob_sum, out[2].tokens) == (0, 0.0, 0)
    for s, a in zip((out[0], out[3]), alone):
        assert s.tokens == a.tokens and s.logprob_sum == pytest.approx(a.logprob_sum, abs=1e-5)
        assert s.logprob_sum < 0


def test_swap_maps_stored_experts_to_fused_parameters(tmp_path):
    """Every per-expert tensor Mixtral stores lands on its slice of transformers' fused experts, bit for bit."""
    from transformers import AutoModelForCausalLM

    from ptlens.mechanism.transplant import Swap
    from ptlens.weights.index import CheckpointIndex, Reader

    args = make_lineage(tmp_path, "mixtral", ("base",))
    path = Path(args[0].split("=", 1)[1])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    swap = Swap(model)
    index = CheckpointIndex.from_dir(path)
    with Reader(index) as r:
        for n in index.tensors:
            assert torch.equal(swap.view(n), r.rows(n)), n
        name = "model.layers.1.block_sparse_moe.experts.2.w3.weight"
        before = swap.view("model.layers.1.block_sparse_moe.experts.2.w1.weight").clone()
        swap.apply({name: torch.zeros_like(r.rows(name))})
        assert not swap.view(name).any() and torch.equal(
            swap.view("model.layers.1.block_sparse_moe.experts.2.w1.weight"), before)
        swap.restore()
        assert torch.equal(swap.view(name), r.rows(name))


def test_all_tied_lineage_has_no_head_rows(tmp_path):
    """Only a lineage mixing tied and untied checkpoints reads a tied head as its embedding: when every checkpoint
    ties, the embedding is compared once (no lm_head rows counting it twice)."""
    from ptlens.weights.index import CheckpointIndex, align_tied_heads

    args = make_lineage(tmp_path, "qwen2", ("base", "sft"))
    indexes = align_tied_heads([CheckpointIndex.from_dir(a.split("=", 1)[1]) for a in args])
    assert all(ix.tied_embeddings and not ix.head_aliases and "lm_head.weight" not in ix.tensors for ix in indexes)
    mixed = align_tied_heads([CheckpointIndex.from_dir(a.split("=", 1)[1]) for a in
                              make_lineage(tmp_path / "mixed", "qwen2", ("base", "sft"), untie=True)])
    assert mixed[0].head_aliases == {"lm_head.weight": "model.embed_tokens.weight"} and not mixed[1].head_aliases
    assert mixed[0].tensors["lm_head.weight"] == mixed[0].tensors["model.embed_tokens.weight"]
    assert mixed[0].tied_embeddings and not mixed[1].tied_embeddings


@pytest.mark.slow
def test_mamba_run_finishes_without_mechanism(tmp_path):
    """``ptlens run`` on a Mamba lineage: weights, behaviour and report, the mechanism step skipped with a warning."""
    args = _mamba(tmp_path)
    res = runner.invoke(app, ["run", "--models", *args, "--output-dir", str(tmp_path / "out"), "--spectral", "off",
                              *FAST])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "attention/MLP questions do not apply" in text and "mechanism skipped" in text
    assert (tmp_path / "out" / "report.html").is_file() and not (tmp_path / "out" / "mechanism").exists()
    results = json.loads((tmp_path / "out" / "model_comparison_results.json").read_text())
    assert list(results["models"]) == ["base", "sft"]
