"""Pure metric functions against hand-computed or brute-force values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptlens.weights import kernels as K
from ptlens.weights import metrics as M
from ptlens.weights import spectral as SP
from ptlens.weights.names import parse_name


def _chunks(A: torch.Tensor, step: int):
    return lambda: (A[i:i + step] for i in range(0, A.shape[0], step))


def test_finalize_hand_computed():
    a = np.array([3.0, 0.0, -4.0, 1.0])
    b = np.array([3.0, 1.0, -4.0, 2.0])
    s = np.zeros(K.T_FIELDS)
    s[K.SUM_A2], s[K.SUM_B2], s[K.DOT_AB] = (a * a).sum(), (b * b).sum(), (a * b).sum()
    s[K.SUM_D2] = ((b - a) ** 2).sum()
    s[K.N_EXACT] = s[K.N_TOL] = 2
    s[K.SUM_ABSA_CHANGED] = 0.0 + 1.0
    s[K.SUM_ABSA] = 8.0
    s[K.N] = 4
    m = M.finalize(s)
    assert m["norm_a"] == math.sqrt(26) and m["delta_norm"] == math.sqrt(2)
    assert m["rel_change"] == pytest.approx(math.sqrt(2 / 26))
    assert m["rms_change"] == pytest.approx(math.sqrt(2) / 2)
    assert m["changed_exact"] == 0.5 and m["update_sparsity"] == 0.5
    assert m["cosine_ab"] == pytest.approx(27 / math.sqrt(26 * 30))
    assert m["changed_magnitude_ratio"] == pytest.approx((1 / 2) / (8 / 4))


def test_kernel_paths_match_float64_reference():
    g = torch.Generator().manual_seed(0)
    base = 0.02 * torch.randn(50_000, generator=g)
    xs = [base]
    for _ in range(3):
        xs.append(xs[-1] + 1e-3 * torch.randn(50_000, generator=g) * (torch.rand(50_000, generator=g) < 0.3))
    Xb = torch.stack(xs).bfloat16()
    Xb[1, 10] = float("nan")
    trans, pairs = [(0, 1), (1, 2), (2, 3), (0, 3)], [(0, 1), (1, 2), (0, 2)]
    t_bf, p_bf = K.stats_numba(Xb.view(torch.int16).numpy().view(np.uint16), Xb.view(torch.int16).numpy().view(np.uint16),
                               trans, trans, pairs, 1e-5)
    X = Xb.float()
    t_f, p_f = K.stats_numba(X.numpy(), X.view(torch.int32).numpy().view(np.uint32), trans, trans, pairs, 1e-5)
    t_t, p_t = K.stats_torch(X, X.view(torch.int32), trans, trans, pairs, 1e-5)
    np.testing.assert_allclose(t_bf, t_t, rtol=1e-12)
    np.testing.assert_allclose(t_f, t_t, rtol=1e-12)
    np.testing.assert_allclose(p_bf, p_t, rtol=1e-12)
    A, B = X[0].double(), X[1].double()
    fin = torch.isfinite(B)
    assert t_t[0, K.NONFINITE] == 1 and t_t[0, K.N] == 49_999
    assert t_t[0, K.SUM_D2] == pytest.approx(float(((B - A)[fin] ** 2).sum()), rel=1e-12)
    assert t_t[0, K.N_EXACT] == int(((X[0] != X[1]) & fin).sum())


def test_randomized_svd_streamed_matches_exact():
    g = torch.Generator().manual_seed(1)
    m, n = 700, 300
    s = 10 * 0.9 ** torch.arange(n, dtype=torch.float32)
    A = (torch.linalg.qr(torch.randn(m, n, generator=g)).Q * s) @ torch.linalg.qr(torch.randn(n, n, generator=g)).Q.T
    exact = torch.linalg.svdvals(A)
    low = SP.randomized_svd(_chunks(A, 64), (m, n), 16, materialize_below=0)
    np.testing.assert_allclose(low.S.numpy(), exact[:16].numpy(), rtol=1e-4)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    mean, mx = SP.principal_angles_deg(low.U, U[:, :16])
    assert mx < 0.1
    assert low.U.shape == (m, 16) and low.V.shape == (n, 16)
    noise = torch.randn(m, n, generator=g)
    S = SP.randomized_svd(_chunks(noise, 64), (m, n), 16, materialize_below=0).S
    exact = torch.linalg.svdvals(noise)[:16]
    assert float(((S - exact).abs() / exact).max()) < 0.08  # no spectral gap: the documented ~5% bound


def test_delta_spectrum_full_definitions():
    S = torch.tensor([4.0, 2.0, 2.0, 0.0])
    frob2 = float((S ** 2).sum())
    d = SP.delta_spectrum(S, frob2, (4, 6), full=True, ks=(1, 2))
    assert d["stable_rank"] == pytest.approx(24 / 16)
    assert d["top1_energy"] == pytest.approx(16 / 24) and d["top2_energy"] == pytest.approx(20 / 24)
    p = np.array([0.5, 0.25, 0.25])
    assert d["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert d["rank_fraction"] == pytest.approx(3 / 4)


def test_spectral_drift_hand_computed():
    assert SP.spectral_drift(torch.tensor([2.0, 4.0]), torch.tensor([3.0, 3.0])) == pytest.approx((0.5 + 0.25) / 2)


@pytest.mark.parametrize("step", [7, 1000])
def test_principal_overlap_matches_brute_force(step):
    g = torch.Generator().manual_seed(2)
    R = torch.randn(120, 50, generator=g)
    masks = torch.rand(3, 120, 50, generator=g) < torch.tensor([0.1, 0.5, 0.9]).view(3, 1, 1)
    out = SP.principal_overlap(_chunks(R, step), lambda: (masks[:, i:i + step] for i in range(0, 120, step)),
                              R.numel(), 0.05)
    top = torch.zeros(R.numel(), dtype=torch.bool)
    top[torch.topk(R.abs().reshape(-1), round(0.05 * R.numel())).indices] = True
    for (ov, inter, nch), mk in zip(out, masks):
        c = mk.reshape(-1)
        assert nch == int(c.sum()) and inter == int((c & top).sum())
        assert ov == pytest.approx((inter / nch) / 0.05)


@pytest.mark.parametrize("name,kind,group,layer", [
    ("model.layers.3.self_attn.q_proj.weight", "q_proj", "attention", 3),
    ("model.layers.12.mlp.down_proj.weight", "down_proj", "mlp", 12),
    ("model.embed_tokens.weight", "embed_tokens", "embedding", None),
    ("lm_head.weight", "lm_head", "head", None),
    ("model.norm.weight", "norm", "norm", None),
    ("model.layers.0.post_attention_layernorm.weight", "post_attention_layernorm", "norm", 0),
    ("transformer.h.2.attn.c_proj.weight", "c_proj", "attention", 2),
    ("transformer.h.2.mlp.c_proj.weight", "c_proj", "mlp", 2),
])
def test_names(name, kind, group, layer):
    r = parse_name(name)
    assert (r.kind, r.group, r.layer) == (kind, group, layer)
