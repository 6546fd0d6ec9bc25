"""The scan recovers planted, known changes (docs/METRICS.md definitions, hand-computed truth)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptlens.weights import kernels as K
from ptlens.weights import spectral as SP
from weights_helpers import SHAPE, base_weights, record, scan, write_lineage

Q = "model.layers.1.self_attn.q_proj.weight"
UP = "model.layers.0.mlp.up_proj.weight"


def _orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q


def test_delta_in_one_module_recovers_frobenius_ratio(tmp_path):
    base = base_weights()
    sft = {k: v.clone() for k, v in base.items()}
    d = torch.randn(sft[Q].shape, generator=torch.Generator().manual_seed(1))
    ratio = 0.0123
    sft[Q] = base[Q] + d * (ratio * base[Q].norm() / d.norm())
    res = scan(write_lineage(tmp_path, {"base": base, "sft": sft}), spectral="off")
    r = record(res, Q, "base→sft")
    assert r.metrics["rel_change"] == pytest.approx(ratio, rel=1e-6)
    assert r.metrics["delta_norm"] == pytest.approx(float((sft[Q].double() - base[Q].double()).norm()), rel=1e-9)
    assert r.metrics["changed_exact"] == 1.0
    for other in res.records:
        if other.tensor != Q:
            assert other.metrics["delta_norm"] == 0.0 and other.metrics["changed_exact"] == 0.0
            assert other.metrics["update_sparsity"] == 1.0
    model = next(x for x in res_summary(res)["model"])
    expected = math.sqrt(float(((sft[Q].double() - base[Q].double()) ** 2).sum())) / math.sqrt(
        sum(float((t.double() ** 2).sum()) for t in base.values()))
    assert model["rel_change"] == pytest.approx(expected, rel=1e-9)


def res_summary(res):
    from ptlens.weights.aggregate import all_aggregates

    return all_aggregates(res.records, res.pairs)


def test_bf16_update_touching_exact_share(tmp_path):
    base = base_weights(dtype=torch.bfloat16)
    rlvr = {k: v.clone() for k, v in base.items()}
    n = rlvr[UP].numel()
    touched = int(0.37 * n)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(3))[:touched]
    flat = rlvr[UP].reshape(-1).float()
    flat[idx] = flat[idx] * 1.0625  # 1 + 2^-4: always a different bf16 value for w != 0
    rlvr[UP] = flat.reshape(rlvr[UP].shape).to(torch.bfloat16)
    res = scan(write_lineage(tmp_path, {"base": base, "rlvr": rlvr}), spectral="off")
    r = record(res, UP, "base→rlvr")
    assert r.metrics["changed_exact"] == touched / n
    assert r.metrics["update_sparsity"] == 1 - touched / n
    a = base[UP].float().abs().reshape(-1)
    assert r.metrics["changed_magnitude_ratio"] == pytest.approx(float(a[idx].double().mean() / a.double().mean()), rel=1e-9)
    tol_expected = float(((rlvr[UP].float() - base[UP].float()).abs() > 1e-5).double().mean())
    assert r.metrics["changed_tol"] == tol_expected


def test_rank_r_delta_stable_rank_and_energy(tmp_path):
    base = base_weights()
    sft = {k: v.clone() for k, v in base.items()}
    m, n = sft[UP].shape
    s = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    delta = _orthonormal(m, 3, 1) @ torch.diag(s) @ _orthonormal(n, 3, 2).T
    sft[UP] = (base[UP].double() + delta).float()
    for spectral in ("topk", "full"):
        r = record(scan(write_lineage(tmp_path, {"base": base, "sft": sft}), spectral=spectral), UP, "base→sft")
        assert r.spectral["stable_rank"] == pytest.approx(14 / 9, rel=1e-5)
        assert r.spectral["top1_energy"] == pytest.approx(9 / 14, rel=1e-5)
        assert r.spectral["top16_energy"] == pytest.approx(1.0, rel=1e-5)
    assert r.spectral["rank_fraction"] == pytest.approx(3 / min(m, n))
    p = s / s.sum()
    assert r.spectral["effective_rank"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-4)


def test_rotation_of_top_subspace_by_known_angle(tmp_path):
    base = base_weights()
    m, n = base[Q].shape
    k = 4
    U, V = _orthonormal(m, m, 5), _orthonormal(n, n, 6)
    s = torch.cat([torch.tensor([10.0, 8.0, 6.0, 5.0]), torch.linspace(0.5, 0.1, min(m, n) - 4)]).double()
    W = U[:, : len(s)] @ torch.diag(s) @ V[:, : len(s)].T
    theta = math.radians(17.0)
    U2 = U.clone()
    U2[:, 0] = math.cos(theta) * U[:, 0] + math.sin(theta) * U[:, k]
    U2[:, k] = -math.sin(theta) * U[:, 0] + math.cos(theta) * U[:, k]
    W2 = U2[:, : len(s)] @ torch.diag(s) @ V[:, : len(s)].T
    base[Q] = W.float()
    sft = {kk: v.clone() for kk, v in base.items()}
    sft[Q] = W2.float()
    r = record(scan(write_lineage(tmp_path, {"base": base, "sft": sft}), k=k), Q, "base→sft")
    assert r.spectral["subspace_angle_u_max"] == pytest.approx(17.0, abs=1e-3)
    assert r.spectral["subspace_angle_u_mean"] == pytest.approx(17.0 / k, abs=1e-3)
    assert r.spectral["subspace_angle_v_max"] == pytest.approx(0.0, abs=1e-2)
    assert r.spectral["spectral_drift"] == pytest.approx(0.0, abs=1e-5)


def test_vocab_resize_compares_shared_rows_and_reports_added(tmp_path):
    base = base_weights()
    sft = {k: v.clone() for k, v in base.items()}
    g = torch.Generator().manual_seed(9)
    emb = "model.embed_tokens.weight"
    planted = 0.01 * torch.randn(base[emb].shape, generator=g)
    extra = torch.randn((8, SHAPE.hidden), generator=g)
    sft[emb] = torch.cat([base[emb] + planted, extra])
    sft["lm_head.weight"] = torch.cat([base["lm_head.weight"], extra])
    dpo = {k: v.clone() for k, v in sft.items()}
    dpo[emb] = sft[emb].clone()
    dpo[emb][-8:] += 1.0  # only the added rows change between sft and dpo
    res = scan(write_lineage(tmp_path, {"base": base, "sft": sft, "dpo": dpo}), spectral="off")
    r = record(res, emb, "base→sft")
    assert (r.rows_a, r.rows_b, r.added_rows) == (256, 264, 8)
    assert r.metrics["entries"] == 256 * SHAPE.hidden
    assert r.metrics["delta_norm"] == pytest.approx(float(((base[emb] + planted) - base[emb]).double().norm()), rel=1e-9)
    assert r.added_rows_norm == pytest.approx(float(extra.double().norm()), rel=1e-9)
    r2 = record(res, emb, "sft→dpo")  # both have 264 rows: the added rows are compared here
    assert r2.added_rows == 0 and r2.metrics["entries"] == 264 * SHAPE.hidden
    assert r2.metrics["delta_norm"] == pytest.approx(math.sqrt(8 * SHAPE.hidden), rel=1e-6)
    assert r2.metrics["changed_exact"] == pytest.approx(8 / 264)
    r3 = record(res, emb, "base→dpo")
    assert r3.added_rows == 8 and r3.metrics["entries"] == 256 * SHAPE.hidden


def test_tied_and_untied_embeddings(tmp_path):
    from dataclasses import replace

    tied = replace(SHAPE, tied=True)
    w = base_weights(shape=tied)
    w2 = {k: v * 1.01 for k, v in w.items()}
    res = scan(write_lineage(tmp_path / "t", {"base": w, "sft": w2}, shape=tied), spectral="off")
    assert res.tied == {"base": True, "sft": True}
    assert not any(r.tensor == "lm_head.weight" for r in res.records)
    u = base_weights()
    res = scan(write_lineage(tmp_path / "u", {"base": u, "sft": {k: v * 1.01 for k, v in u.items()}}), spectral="off")
    assert res.tied == {"base": False, "sft": False}
    assert record(res, "lm_head.weight", "base→sft").metrics["rel_change"] == pytest.approx(0.01, rel=1e-5)


def test_sharded_and_single_file_identical(tmp_path):
    base = base_weights(dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(2)
    sft = {k: (v.float() + 1e-3 * torch.randn(v.shape, generator=g)).bfloat16() for k, v in base.items()}
    one = scan(write_lineage(tmp_path / "one", {"base": base, "sft": sft}, shards=1))
    many = scan(write_lineage(tmp_path / "many", {"base": base, "sft": sft}, shards=3))
    assert (tmp_path / "many" / "sft" / "model.safetensors.index.json").is_file()
    assert [r.tensor for r in one.records] == [r.tensor for r in many.records]
    for a, b in zip(one.records, many.records):
        assert a.metrics == b.metrics
        assert a.spectral == b.spectral


def test_layer_pattern_selects_tensors(tmp_path):
    base = base_weights()
    args = write_lineage(tmp_path, {"base": base, "sft": {k: v * 1.001 for k, v in base.items()}})
    res = scan(args, spectral="off", layer_pattern=r"layers\.0\.")
    names = {r.tensor for r in res.records}
    assert names and all(".layers.0." in n for n in names)
    assert len(names) == 9


def test_chunked_streaming_matches_whole_tensors(tmp_path):
    base = base_weights(dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(4)
    sft = {k: (v.float() + 2e-3 * torch.randn(v.shape, generator=g)).bfloat16() for k, v in base.items()}
    args = write_lineage(tmp_path, {"base": base, "sft": sft})
    whole = scan(args, spectral="off")
    tiny = scan(args, spectral="off", chunk_mb=0)  # chunk of one row
    assert len(whole.records) == len(tiny.records) > 0
    for a, b in zip(whole.records, tiny.records):
        np.testing.assert_allclose(a.sums, b.sums, rtol=1e-12)


def test_mixed_dtypes_compare_in_coarser_dtype(tmp_path):
    base = base_weights(dtype=torch.float32)
    sft = {k: v.to(torch.bfloat16) for k, v in base.items()}  # only rounding, no training
    sft[UP] = (base[UP] * 1.0625).to(torch.bfloat16)
    res = scan(write_lineage(tmp_path, {"base": base, "sft": sft}), spectral="off")
    r = record(res, "model.layers.0.self_attn.k_proj.weight", "base→sft")
    assert r.metrics["changed_exact"] == 0.0 and r.metrics["delta_norm"] > 0
    assert (r.dtype_a, r.dtype_b) == ("F32", "BF16")
    assert record(res, UP, "base→sft").metrics["changed_exact"] == 1.0


def test_delta_cosine_detects_undo(tmp_path):
    base = base_weights()
    g = torch.Generator().manual_seed(7)
    d = {k: 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    sft = {k: v + d[k] for k, v in base.items()}
    dpo = {k: sft[k] - d[k] for k in base}  # undoes SFT
    res = scan(write_lineage(tmp_path, {"base": base, "sft": sft, "dpo": dpo}), spectral="off")
    p = next(x for x in res.pairs if x.tensor == UP)
    assert (p.t1, p.t2) == ("base→sft", "sft→dpo")
    assert p.cosine == pytest.approx(-1.0, abs=1e-6)
    assert record(res, UP, "base→dpo").metrics["rel_change"] < 1e-6


def test_principal_overlap_extremes(tmp_path):
    """Changes only inside the top-5% of |rank-k W_A| give 1/α = 20; only outside give 0."""
    base = base_weights()
    k = 16
    W = base[UP].double()
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    R = (U[:, :k] * S[:k]) @ Vh[:k]
    n = R.numel()
    top = torch.topk(R.abs().reshape(-1), round(0.05 * n)).indices
    inside = torch.zeros(n, dtype=torch.bool)
    inside[top] = True
    for mask, expected in ((inside, 20.0), (~inside, 0.0)):
        sft = {kk: v.clone() for kk, v in base.items()}
        flat = sft[UP].reshape(-1).clone()
        flat[mask] *= 1.5
        sft[UP] = flat.reshape(W.shape)
        r = record(scan(write_lineage(tmp_path / str(expected), {"base": base, "sft": sft}), k=k), UP, "base→sft")
        assert r.spectral["principal_overlap"] == pytest.approx(expected, abs=1e-9)


def test_nan_and_inf_are_counted_not_fatal(tmp_path):
    base = base_weights()
    sft = {k: v * 1.01 for k, v in base.items()}
    sft[UP] = sft[UP].clone()
    sft[UP][0, 0] = float("nan")
    sft[UP][1, 1] = float("inf")
    res = scan(write_lineage(tmp_path, {"base": base, "sft": sft}))
    r = record(res, UP, "base→sft")
    assert r.metrics["nonfinite"] == 2 and r.metrics["entries"] == base[UP].numel() - 2
    assert r.metrics["rel_change"] == pytest.approx(0.01, rel=1e-5)
    assert r.sums[K.NONFINITE] == 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_numba_and_torch_backends_agree(tmp_path, dtype):
    """bf16 and float32 go to the fused kernel as stored bit patterns (no torch), float16 through a float32
    copy; the torch backend (the GPU path) is the reference for all three, nulls included."""
    base = base_weights(dtype=dtype)
    g = torch.Generator().manual_seed(8)
    st = {"base": base}
    prev = base
    for label in ("sft", "dpo", "rlvr"):
        prev = {k: (v.float() + 1e-3 * torch.randn(v.shape, generator=g) * (torch.rand(v.shape, generator=g) < 0.5)).to(dtype)
                for k, v in prev.items()}
        st[label] = prev
    args = write_lineage(tmp_path, st)
    a = scan(args, spectral="off", backend="numba")
    b = scan(args, spectral="off", backend="torch")
    assert len(a.records) == len(b.records) == 21 * 5
    for x, y in zip(a.records, b.records):
        np.testing.assert_allclose(x.sums, y.sums, rtol=1e-10, atol=1e-12)
        assert x.metrics["changed_exact_null"] == y.metrics["changed_exact_null"] is not None
    for x, y in zip(a.pairs, b.pairs):
        np.testing.assert_allclose(x.sums, y.sums, rtol=1e-10, atol=1e-15)
    assert {(p.t1, p.t2) for p in a.pairs} == {("base→sft", "sft→dpo"), ("sft→dpo", "dpo→rlvr"), ("base→sft", "dpo→rlvr")}
    assert [t.name for t in a.transitions] == ["base→sft", "sft→dpo", "dpo→rlvr", "base→dpo", "base→rlvr"]


@pytest.mark.parametrize("spectral", ["topk", "full"])
def test_spectral_of_resized_vocab_between_resized_checkpoints(tmp_path, spectral):
    base = base_weights()
    g = torch.Generator().manual_seed(11)
    sft = {k: v.clone() for k, v in base.items()}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        sft[name] = torch.cat([base[name], 0.02 * torch.randn((8, SHAPE.hidden), generator=g)])
    dpo = {k: v.clone() for k, v in sft.items()}
    dpo["lm_head.weight"] = sft["lm_head.weight"] + 0.01 * torch.randn(sft["lm_head.weight"].shape, generator=g)
    r = record(scan(write_lineage(tmp_path, {"base": base, "sft": sft, "dpo": dpo}), spectral=spectral),
               "lm_head.weight", "sft→dpo")
    shared = (dpo["lm_head.weight"] - sft["lm_head.weight"]).double()  # both hold 264 rows: all are compared
    s = torch.linalg.svdvals(shared)
    assert r.spectral["stable_rank"] == pytest.approx(float((s ** 2).sum() / s[0] ** 2), rel=1e-4)
    assert r.spectral["top16_energy"] == pytest.approx(float((s[:16] ** 2).sum() / (s ** 2).sum()), rel=1e-4)


def test_widen_with_deltas_is_exact():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 40_000, generator=g).bfloat16()
    out = np.empty((5, 40_000), dtype=np.float32)
    K.widen_with_deltas(x.view(torch.int16).numpy().view(np.uint16), [(0, 1), (0, 2)], out)
    want = torch.cat([x.float(), (x[1].float() - x[0].float())[None], (x[2].float() - x[0].float())[None]])
    assert torch.equal(torch.from_numpy(out), want)


def test_streamed_spectral_pass_matches_resident(tmp_path):
    """The fused, re-read row-block path (large matrices) agrees with the in-memory one."""
    base = base_weights(dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(8)
    sft = {k: (v.float() + 3e-2 * torch.randn(v.shape, generator=g)).bfloat16() for k, v in base.items()}
    rlvr = {k: (v.float() + 1e-2 * torch.randn(v.shape, generator=g)).bfloat16() for k, v in sft.items()}
    args = write_lineage(tmp_path, {"base": base, "sft": sft, "rlvr": rlvr})
    resident = scan(args, k=4)
    streamed = scan(args, k=4, spectral_resident_mb=0, chunk_mb=0)
    assert len(resident.records) == len(streamed.records)
    compared = 0
    for a, b in zip(resident.records, streamed.records):
        assert (a.tensor, a.transition) == (b.tensor, b.transition)
        for key, va in (a.spectral or {}).items():
            if isinstance(va, float):
                assert b.spectral[key] == pytest.approx(va, rel=1e-3, abs=1e-3), (a.tensor, a.transition, key)
                compared += 1
    assert compared > 100


def test_rows_per_transition_for_resized_vocab(tmp_path):
    """1000 → 1008 → 1008 rows: sft→dpo is measured on all 1008 rows, base→* on 1000, added rows per transition."""
    from ptlens.synth import LlamaShape

    shape = LlamaShape(vocab=1000, hidden=64, intermediate=96, layers=1, heads=4, kv_heads=2)
    base = base_weights(shape=shape)
    g = torch.Generator().manual_seed(21)
    sft = {k: v.clone() for k, v in base.items()}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        sft[name] = torch.cat([base[name] + 0.01 * torch.randn(base[name].shape, generator=g),
                               0.02 * torch.randn((8, 64), generator=g)])
    dpo = {k: v.clone() for k, v in sft.items()}
    planted = torch.zeros(1008, 64)
    planted[1000:] = torch.randn(8, 64, generator=g)  # dpo moves only the rows sft added
    planted[:1000] = 1e-3 * torch.randn(1000, 64, generator=g)
    dpo["lm_head.weight"] = sft["lm_head.weight"] + planted
    res = scan(write_lineage(tmp_path, {"base": base, "sft": sft, "dpo": dpo}, shape=shape), spectral="full")
    r = record(res, "lm_head.weight", "sft→dpo")
    assert (r.rows_a, r.rows_b, r.added_rows) == (1008, 1008, 0)
    assert r.metrics["entries"] == 1008 * 64
    s = torch.linalg.svdvals(planted.double())
    assert r.spectral["stable_rank"] == pytest.approx(float((s ** 2).sum() / s[0] ** 2), rel=1e-6)
    assert r.spectral["sigma1"] == pytest.approx(float(s[0]), rel=1e-6)
    U_a = torch.linalg.svd(sft["lm_head.weight"].double(), full_matrices=False).U[:, :16]
    U_b = torch.linalg.svd(dpo["lm_head.weight"].double(), full_matrices=False).U[:, :16]
    mean, mx = SP.principal_angles_deg(U_a, U_b)  # W_A and W_B on their 1008 shared rows
    assert r.spectral["subspace_angle_u_mean"] == pytest.approx(mean, abs=1e-5)
    for t in ("base→sft", "base→dpo"):
        rb = record(res, "lm_head.weight", t)
        assert (rb.rows_a, rb.rows_b, rb.added_rows, rb.metrics["entries"]) == (1000, 1008, 8, 1000 * 64)
    d = (dpo["lm_head.weight"][:1000] - base["lm_head.weight"]).double()
    s = torch.linalg.svdvals(d)
    assert record(res, "lm_head.weight", "base→dpo").spectral["stable_rank"] == pytest.approx(
        float((s ** 2).sum() / s[0] ** 2), rel=1e-6)


@pytest.mark.may_skip  # glibc only
def test_heap_temporaries_restore_the_scans_mmap_threshold():
    """The overlap passes' heap setting is undone to whatever the scan had set, inside or outside a scan."""
    from ptlens.weights import memory as S

    if S._glibc() is None:
        pytest.skip("not glibc")
    with S._return_freed_memory():
        assert S._mmap_threshold == 1 << 20
        with S._heap_temporaries():
            assert S._mmap_threshold == 256 << 20
        assert S._mmap_threshold == 1 << 20
    assert S._mmap_threshold == 32 << 20
    with S._heap_temporaries():
        pass
    assert S._mmap_threshold == 32 << 20
