"""ptlens mechanism: planted truths recovered (one changed MLP, a planted residual direction), CKA against an
independent Gram-matrix computation, the CLI on the shipped lineage, and the architecture-mismatch error."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ptlens.mechanism import MechanismConfig, run_mechanism
from ptlens.mechanism.activations import (CKAStats, compare_pass, kl_rows, linear_cka, make_batches, record_pass,
                                          residual_streams)
from ptlens.mechanism.transplant import layer_blocks, plan_parts
from ptlens.resolve import resolve_lineage
from ptlens.synth import LlamaShape, random_weights, save_checkpoint

TINY = Path(__file__).resolve().parents[1] / "src" / "ptlens" / "data" / "tiny"
SHAPE = LlamaShape(vocab=103, hidden=32, intermediate=48, layers=4, heads=4, kv_heads=2)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "ptlens_stage.json")


def _save(path: Path, tensors: dict, shape: LlamaShape = SHAPE) -> Path:
    cfg = shape.config(dtype="float32")
    cfg.update(max_position_embeddings=256, pad_token_id=0)
    save_checkpoint(path, tensors, cfg)
    for f in TOKENIZER_FILES:  # the shipped character tokenizer (103 ids) and chat template
        shutil.copy(TINY / "sft" / f, path / f)
    return path


def _weights(seed: int = 0, shape: LlamaShape = SHAPE) -> dict:
    w = random_weights(shape, seed=seed, dtype=torch.float32)
    w["model.embed_tokens.weight"] *= 25  # embeddings of a trained model's size, so layers do not drown them
    return w


@pytest.fixture(scope="module")
def planted_mlp(tmp_path_factory):
    """A and B differ only in layer 1's MLP."""
    root = tmp_path_factory.mktemp("mlp")
    a = _weights()
    b = {k: v.clone() for k, v in a.items()}
    g = torch.Generator().manual_seed(7)
    for k in ("gate_proj", "up_proj", "down_proj"):
        name = f"model.layers.1.mlp.{k}.weight"
        b[name] = b[name] + 0.5 * torch.randn(b[name].shape, generator=g)
    _save(root / "a", a)
    _save(root / "b", b)
    lineage = resolve_lineage(models=[f"a={root / 'a'}", f"b={root / 'b'}"])
    cfg = MechanismConfig(limit=6, max_new_tokens=12, n_boot=200, plain_prompts=6, figures=False, device="cpu")
    res = run_mechanism(lineage, cfg, root / "out")
    return root, lineage, res


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_planted_mlp_layers(planted_mlp):
    root, _, res = planted_mlp
    rows = {int(r["layer"]): r for r in _rows(root / "out" / "mechanism" / "layers.csv")}
    assert sorted(rows) == [-1, 0, 1, 2, 3]
    for L in (-1, 0):  # before the changed MLP: identical streams
        assert float(rows[L]["act_rel_diff"]) == 0.0
        assert float(rows[L]["logit_lens_kl"]) == 0.0
        assert float(rows[L]["cka"]) == pytest.approx(1.0, abs=1e-9)
    for L in (1, 2, 3):  # at and after it: different
        assert float(rows[L]["act_rel_diff"]) > 1e-2
        assert float(rows[L]["cka"]) < 1 - 1e-4
        assert float(rows[L]["logit_lens_kl"]) > 1e-5


def test_planted_mlp_transplants(planted_mlp):
    root, _, res = planted_mlp
    rows = {r["part"]: r for r in _rows(root / "out" / "mechanism" / "transplant.csv")}
    carriers, others = ("mlp", "layer 1"), ("attention", "embedding+head", "norm", "layer 0", "layer 2", "layer 3",
                                            "non-layer")
    assert set(carriers + others + ("a", "b", "sum of groups", "sum of layers")) == set(rows)
    assert float(rows["b"]["kl_to_a"]) > 1e-4  # there is a distance to recover
    for p in carriers:  # the transplant of the changed part is B itself
        assert float(rows[p]["kl_to_b"]) == 0.0
        assert float(rows[p]["kl_recovered"]) == 1.0
        assert float(rows[p]["delta_share"]) == pytest.approx(1.0)
        assert float(rows[p]["accuracy"]) == float(rows["b"]["accuracy"])
    for p in others:  # every other transplant leaves A as it was
        assert float(rows[p]["kl_to_a"]) == 0.0
        assert float(rows[p]["kl_recovered"]) == 0.0
        assert float(rows[p]["delta_share"]) == 0.0
        assert float(rows[p]["accuracy"]) == float(rows["a"]["accuracy"])
    for p in ("sum of groups", "sum of layers"):  # exactly additive here: one part holds all of ΔW
        assert float(rows[p]["kl_recovered"]) == pytest.approx(1.0)


def test_planted_mlp_record(planted_mlp):
    from ptlens.report.mechanism import mechanism_markdown, mechanism_record

    _, _, res = planted_mlp
    rec = mechanism_record(res.summary)
    t = rec["transitions"][0]
    assert t["first_layer"] == 1
    assert t["carriers"] == ["mlp", "layer 1"]
    assert "mlp" in "\n".join(mechanism_markdown(rec))
    assert mechanism_markdown(None)[-2].startswith("_Not measured")


def test_rerun_reuses_stored_results(planted_mlp):
    root, lineage, res = planted_mlp
    cfg = MechanismConfig(limit=6, max_new_tokens=12, n_boot=200, plain_prompts=6, figures=False, device="cpu")
    again = run_mechanism(lineage, cfg, root / "out")
    assert again.reused and again.summary["layers"] == res.summary["layers"]


def test_interrupted_run_resumes_at_next_transition(planted_mlp, monkeypatch):
    """Finished transitions are kept: with summary.json gone, a rerun rebuilds the files without recomputing."""
    import ptlens.mechanism.run as run_mod

    root, lineage, res = planted_mlp
    (root / "out" / "mechanism" / "summary.json").unlink()

    def boom(*a, **k):
        raise AssertionError("recomputed a finished transition")

    monkeypatch.setattr(run_mod, "transition", boom)
    cfg = MechanismConfig(limit=6, max_new_tokens=12, n_boot=200, plain_prompts=6, figures=False, device="cpu")
    again = run_mechanism(lineage, cfg, root / "out")
    assert not again.reused and again.summary["transplant"] == res.summary["transplant"]


def _gram_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA the textbook way (Kornblith et al. 2019): HSIC of centred token × token Gram matrices."""
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float((k * l_).sum() / np.sqrt((k * k).sum() * (l_ * l_).sum()))


def test_cka_stream_matches_gram_formula():
    g = np.random.default_rng(0)
    x = g.normal(size=(300, 16)) + 40.0  # a large common offset, as residual streams have
    y = x @ g.normal(size=(16, 12)) + 0.5 * g.normal(size=(300, 12)) - 25.0
    s = CKAStats()
    for i in range(0, 300, 64):
        s.update(torch.tensor(x[i:i + 64], dtype=torch.float32), torch.tensor(y[i:i + 64], dtype=torch.float32))
    assert s.value() == pytest.approx(_gram_cka(x, y), abs=1e-5)
    q, _ = np.linalg.qr(g.normal(size=(16, 16)))
    assert linear_cka(torch.tensor(x), torch.tensor(3 * x @ q + 7)) == pytest.approx(1.0, abs=1e-6)  # rotation, scale, shift (float32 sums)
    assert linear_cka(torch.tensor(x), torch.tensor(g.normal(size=(300, 16)))) < 0.2


def test_compare_pass_matches_direct_computation(tmp_path):
    """Streamed per-layer numbers equal a direct per-prompt computation; the last layer's logit lens is the models' KL."""
    from transformers import AutoModelForCausalLM

    a = _weights(seed=1)
    b = {k: v + 0.02 * torch.randn_like(v) for k, v in a.items()}
    ma = AutoModelForCausalLM.from_pretrained(str(_save(tmp_path / "a", a))).eval()
    mb = AutoModelForCausalLM.from_pretrained(str(_save(tmp_path / "b", b))).eval()
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, 103, (n,), generator=g).tolist() for n in (7, 12, 5, 9)]
    batches = make_batches(rows, [True] * 4, pad_id=0, batch_tokens=20)
    assert len(batches) > 1
    sums = compare_pass(ma, record_pass(mb, batches), batches, adl_k=3)
    xs, ys, kl_last = [], [], []
    with torch.inference_mode():
        for r in rows:
            ids = torch.tensor([r])
            one = torch.ones_like(ids)
            xs.append([h[0] for h in residual_streams(ma, ids, one)])
            ys.append([h[0] for h in residual_streams(mb, ids, one)])
            la = torch.log_softmax(ma(ids).logits[0], -1)
            lb = torch.log_softmax(mb(ids).logits[0], -1)
            kl_last.append(kl_rows(la, lb))
    for L in range(SHAPE.layers + 1):
        x = torch.cat([s[L] for s in xs]).double().numpy()
        y = torch.cat([s[L] for s in ys]).double().numpy()
        r = sums[L].row()
        assert r["tokens"] == sum(map(len, rows))
        assert r["cka"] == pytest.approx(_gram_cka(x, y), abs=1e-5)
        rel = np.linalg.norm(y - x, axis=1) / np.linalg.norm(x, axis=1)
        assert r["act_rel_diff"] == pytest.approx(rel.mean(), rel=1e-4)
    assert sums[-1].row()["logit_lens_kl"] == pytest.approx(float(torch.cat(kl_last).mean()), rel=1e-4)


def test_adl_recovers_planted_direction(tmp_path):
    """B = A with u = the unembedding row of token t added to every embedding: ADL's top token at layer −1 is t."""
    t = 57
    a = _weights(seed=2)
    b = {k: v.clone() for k, v in a.items()}
    u = a["lm_head.weight"][t]
    b["model.embed_tokens.weight"] = b["model.embed_tokens.weight"] + 3 * u / u.norm() * a[
        "model.embed_tokens.weight"].norm(dim=1).mean()
    _save(tmp_path / "a", a)
    _save(tmp_path / "b", b)
    lineage = resolve_lineage(models=[f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"])
    run_mechanism(lineage, MechanismConfig(limit=2, transplant=False, figures=False, device="cpu"), tmp_path / "out")
    adl = json.loads((tmp_path / "out" / "mechanism" / "adl.json").read_text())
    layers = {x["layer"]: x for x in adl["transitions"][0]["layers"]}
    assert adl["k"] == 5 and adl["transitions"][0]["positions"] > 0
    assert layers[-1]["promoted"][0]["id"] == t
    assert t not in [x["id"] for x in layers[-1]["suppressed"]]


def test_parts_cover_every_tensor_once():
    names = list(LlamaShape(layers=8).tensor_shapes())
    parts = plan_parts(names, 8)
    assert layer_blocks(8) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert layer_blocks(3) == [(0, 0), (1, 1), (2, 2)]
    for partition in ("groups", "layers"):
        covered = [n for p in parts if p.partition == partition for n in p.tensors]
        assert sorted(covered) == sorted(names)
    assert [p.name for p in parts if p.partition == "layers"] == ["layers 0-1", "layers 2-3", "layers 4-5",
                                                                 "layers 6-7", "non-layer"]


def test_cli_on_shipped_lineage_and_report(tmp_path):
    """ptlens mechanism on two shipped checkpoints writes its files; the report says "not measured" before, and
    shows the section after."""
    from typer.testing import CliRunner

    from ptlens.cli import app
    from ptlens.report.build import build_report

    out = tmp_path / "out"
    models = ["--models", f"sft={TINY / 'sft'}", f"rlvr={TINY / 'rlvr'}"]
    r = CliRunner().invoke(app, ["behavior", *models, "--limit", "2", "--n-samples", "1", "--max-new-tokens", "16",
                                 "--output-dir", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    build_report(out)
    assert "Not measured: no mechanism results" in (out / "report.html").read_text()
    assert "_Not measured: no mechanism results" in (out / "report.md").read_text()
    r = CliRunner().invoke(app, ["mechanism", *models, "--limit", "4", "--output-dir", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    for f in ("layers.csv", "adl.json", "transplant.csv", "summary.json", "depth_profile.png", "transplant.png"):
        assert (out / "mechanism" / f).is_file(), f
    rows = _rows(out / "mechanism" / "transplant.csv")
    assert {r["part"] for r in rows} >= {"sft", "rlvr", "mlp", "attention", "layer 3", "sum of layers"}
    assert all(r["transition"] == "sft→rlvr" for r in rows)
    build_report(out)
    html, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    for text in (html, md):
        assert "Mechanism: which layers and modules carry the change" in text
        assert "Not measured: no mechanism results" not in text
    assert 'id="fig-mechanism-depth_figure"' in html and "data:image/png;base64," in html
    assert "mechanism/transplant.png" in md


def test_architecture_mismatch_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from ptlens.cli import app

    _save(tmp_path / "a", _weights())
    other = LlamaShape(vocab=103, hidden=32, intermediate=48, layers=2, heads=4, kv_heads=2)
    _save(tmp_path / "b", _weights(shape=other), shape=other)
    r = CliRunner().invoke(app, ["mechanism", "--models", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}",
                                 "--output-dir", str(tmp_path / "out")])
    assert r.exit_code == 2
    lines = [x for x in r.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "architecture mismatch" in lines[0], r.output


def test_transitions_consecutive_or_all():
    from ptlens.mechanism.run import pairs_for
    from ptlens.resolve.lineage import Checkpoint, Lineage

    lin = Lineage([Checkpoint(label=n, spec=n, name=n) for n in ("base", "sft", "dpo", "rlvr")])
    assert pairs_for(lin, "consecutive") == [(0, 1, "base→sft"), (1, 2, "sft→dpo"), (2, 3, "dpo→rlvr")]
    assert [p[2] for p in pairs_for(lin, "all")] == ["base→sft", "sft→dpo", "dpo→rlvr", "base→dpo", "base→rlvr"]
    with pytest.raises(Exception, match="consecutive or all"):
        MechanismConfig(transitions="some").validate()


def test_carrier_claims_hold_their_family_wise_error_rate():
    """Nine parts that each remove 45% of the KL (none carries it: the criterion is 50%): the family-wise bound
    calls a carrier in at most 5% of simulated transitions (binomial margin), while the per-part 95% bound
    the report used before calls one far more often; a part removing 80% is still found."""
    from ptlens.mechanism.criteria import CARRY_SHARE
    from ptlens.mechanism.transplant import Measured, part_statistics
    from ptlens.stats.bootstrap import resample_weights

    rng = np.random.default_rng(0)
    n, parts, sims = 24, 9, 200
    fw_alarms = plain_alarms = found = 0
    for sim in range(sims):
        kl_a = rng.gamma(2.0, 1.0, n)
        a = Measured(np.zeros(n, bool), np.zeros(n), kl_a)
        b = Measured(np.ones(n, bool), kl_a, np.zeros(n))
        w = resample_weights(n, 400, sim)
        fw = plain = False
        for _ in range(parts):
            m = Measured(np.zeros(n, bool), kl_a * 0.45, kl_a * np.clip(rng.normal(0.55, 0.35, n), 0, None))
            st = part_statistics(m, a, b, np.ones(n), w, family=parts)
            assert st["kl_recovered_fw"]["lo"] <= st["kl_recovered"]["lo"] + 1e-12
            fw |= st["kl_recovered_fw"]["lo"] >= CARRY_SHARE
            plain |= st["kl_recovered"]["lo"] >= CARRY_SHARE
        fw_alarms += fw
        plain_alarms += plain
        if sim < 20:
            m = Measured(np.zeros(n, bool), kl_a * 0.8, kl_a * np.clip(rng.normal(0.2, 0.1, n), 0, None))
            found += part_statistics(m, a, b, np.ones(n), w, family=parts)["kl_recovered_fw"]["lo"] >= CARRY_SHARE
    assert fw_alarms / sims <= 0.05 + 2 * (0.05 * 0.95 / sims) ** 0.5, fw_alarms
    assert plain_alarms > 2 * max(fw_alarms, 1), (plain_alarms, fw_alarms)
    assert found == 20
