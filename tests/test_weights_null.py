"""Null baselines: an unstructured update scores at its null, a dtype cast within it, structure beyond it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from weights_helpers import base_weights, record, scan, write_lineage

from ptlens.weights import null as N
from ptlens.weights.aggregate import all_aggregates
from ptlens.weights.outputs import read_tensors_csv, write_outputs

Q = "model.layers.0.self_attn.q_proj.weight"
EMB = "model.embed_tokens.weight"


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-6) / n)


@pytest.fixture(scope="module")
def cast_and_noise(tmp_path_factory):
    """fp32 base → the same values cast to bf16 (sft) → isotropic Gaussian noise stored in bf16 (rlvr)."""
    root = tmp_path_factory.mktemp("null")
    base = base_weights()
    sft = {k: v.bfloat16() for k, v in base.items()}
    g = torch.Generator().manual_seed(3)
    rlvr = {k: (v.float() + 1e-3 * torch.randn(v.shape, generator=g)).bfloat16() for k, v in sft.items()}
    args = write_lineage(root, {"base": base, "sft": sft, "rlvr": rlvr})
    return scan(args, spectral="full"), root


def test_cast_only_is_no_change_beyond_rounding(cast_and_noise):
    res, _ = cast_and_noise
    checked = 0
    for r in res.records:
        if r.transition != "base→sft" or r.metrics["delta_norm"] == 0:
            continue
        m, s = r.metrics, r.spectral
        n = r.null_entries
        assert m["changed_exact"] == 0.0 <= m["changed_exact_null"]  # same bf16 values: nothing changed
        assert m["changed_tol"] <= m["changed_tol_null"] + 3 * _se(m["changed_tol_null"], n)
        if s.get("stable_rank") is not None:
            assert s["stable_rank"] == pytest.approx(s["stable_rank_null"], rel=0.15), r.tensor
            assert s["rank_fraction"] <= s["rank_fraction_null"] == 1.0
            assert s["principal_overlap"] is None  # no changed entry to overlap with
            checked += 1
    assert checked >= 7


def test_isotropic_bf16_update_scores_at_its_null(cast_and_noise):
    """The issue's finding: bf16 rounding of pure noise fakes 'avoids principal weights'; the null says so."""
    res, _ = cast_and_noise
    for name in (Q, EMB):
        r = record(res, name, "sft→rlvr")
        m, s = r.metrics, r.spectral
        n = r.null_entries
        assert m["changed_exact"] == pytest.approx(m["changed_exact_null"], abs=4 * _se(m["changed_exact"], n) + 0.005)
        assert m["changed_magnitude_ratio"] == pytest.approx(m["changed_magnitude_ratio_null"], abs=0.02)
        assert m["changed_magnitude_ratio_null"] < 0.99  # rounding alone: changed entries are the smaller ones
        assert s["principal_overlap"] == pytest.approx(s["principal_overlap_null"], abs=0.06)
        assert s["stable_rank"] == pytest.approx(s["stable_rank_null"], rel=0.15)


def test_fp32_noise_null_is_chance(tmp_path):
    base = base_weights()
    g = torch.Generator().manual_seed(5)
    sft = {k: v + 1e-3 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    r = record(scan(write_lineage(tmp_path, {"base": base, "sft": sft}), spectral="topk"), EMB, "base→sft")
    assert r.metrics["changed_exact_null"] == 1.0 and r.metrics["changed_tol_null"] > 0.99
    assert r.metrics["changed_magnitude_ratio_null"] == pytest.approx(1.0, abs=1e-9)
    assert r.spectral["principal_overlap_null"] == pytest.approx(1.0, abs=1e-9)


def test_planted_structure_departs_from_null(tmp_path):
    """A rank-1 fp32 update: stable rank 1 against a null of ~29; a sparse update on large weights: overlap > null."""
    base = base_weights()
    g = torch.Generator().manual_seed(6)
    sft = {k: v.clone() for k, v in base.items()}
    W = base[EMB]
    sft[EMB] = W + 0.01 * torch.outer(torch.randn(W.shape[0], generator=g), torch.randn(W.shape[1], generator=g))
    r = record(scan(write_lineage(tmp_path, {"base": base, "sft": sft}), spectral="topk"), EMB, "base→sft")
    assert r.spectral["stable_rank"] == pytest.approx(1.0, rel=1e-4)
    assert r.spectral["stable_rank_null"] == pytest.approx(N.gaussian_stable_rank(256, 64), rel=1e-12)
    assert r.spectral["stable_rank_null"] > 25


def test_sparse_regime_rank_nulls_simulated():
    """Tiny bf16 updates change few entries: the rank nulls follow the sparse pattern, not Marchenko–Pastur."""
    m, n = 400, 300
    g = torch.Generator().manual_seed(2)
    d = torch.zeros(50, n)
    pick = torch.rand(50, n, generator=g) < 0.01  # p = 1%: 3 non-zeros per row of 300
    d[pick] = torch.randn(int(pick.sum()), generator=g)
    out = N.rank_nulls(d, (m, n), seed=0)
    p = float(pick.float().mean())
    assert out["rank_fraction_null"] == pytest.approx(min(m * (1 - (1 - p) ** n), n * (1 - (1 - p) ** m)) / n, rel=1e-6)
    # direct check of the derived value: the same construction, its exact stable rank
    rng = np.random.default_rng(1)
    refs = []
    for _ in range(5):
        A = np.zeros((m, n))
        mask = rng.random((m, n)) < p
        A[mask] = rng.standard_normal(mask.sum())
        s = np.linalg.svd(A, compute_uv=False)
        refs.append((s ** 2).sum() / s[0] ** 2)
    assert out["stable_rank_null"] == pytest.approx(np.mean(refs), rel=0.2)
    assert out["stable_rank_null"] < 0.8 * N.gaussian_stable_rank(m, n)


def test_null_columns_and_aggregates(cast_and_noise, tmp_path):
    res, _ = cast_and_noise
    summary = write_outputs(res, tmp_path, figures=False)
    rows = read_tensors_csv(tmp_path / "weights" / "tensors.csv")
    for col in ("changed_exact_null", "changed_tol_null", "changed_magnitude_ratio_null", "stable_rank_null",
                "rank_fraction_null", "principal_overlap_null", "sigma1_err", "stable_rank_err"):
        assert col in rows[0]
    recs = [r for r in res.records if r.transition == "sft→rlvr"]
    model = next(a for a in summary["aggregates"]["model"] if a["transition"] == "sft→rlvr")
    n = sum(float(r.sums[8]) for r in recs)
    want = sum(r.metrics["changed_exact_null"] * float(r.sums[8]) for r in recs) / n
    assert model["changed_exact_null"] == pytest.approx(want, rel=1e-12)
    w = [(float(r.sums[8]), r.spectral["stable_rank_null"]) for r in recs if r.spectral.get("stable_rank") is not None]
    assert model["stable_rank_wmean_null"] == pytest.approx(sum(a * b for a, b in w) / sum(a for a, _ in w))
    assert model["stable_rank_null_wmean"] == model["stable_rank_wmean_null"]
    assert "principal_overlap_wmean_null" in model and "changed_magnitude_ratio_null" in model
    text = (tmp_path / "weight_analysis_report.md").read_text()
    assert "(null " in text
    group = all_aggregates(res.records, res.pairs)["group"]
    assert all("changed_tol_null" in g for g in group)


@pytest.mark.parametrize("da,db", [("BF16", "BF16"), ("F32", "BF16"), ("BF16", "F32"), ("F32", "F32")])
def test_compiled_null_draw_equals_torch_cast(da, db):
    """The one-pass kernel rounds like torch's float32 → bfloat16 cast (round to nearest even), bit for bit."""
    g = torch.Generator().manual_seed(7)
    dt = {"BF16": torch.bfloat16, "F32": torch.float32}
    xa = (0.02 * torch.randn(32, 512, generator=g)).to(dt[da]).float().numpy()  # values W_A can store
    z = torch.randn(32, 512, generator=g).numpy()
    for sigma in (1e-6, 1e-4, 1e-2):
        s, ch, d = N.simulate(xa, da, db, sigma, z, 1e-5)
        s2, ch2, d2 = N.simulate_torch(xa, da, db, sigma, z, 1e-5)
        assert ch.shape == d.shape == xa.shape
        np.testing.assert_array_equal(ch, ch2)
        np.testing.assert_array_equal(d, d2)
        np.testing.assert_allclose(s, s2, rtol=1e-12)
