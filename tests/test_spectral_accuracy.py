"""topk against exact spectra: ≤ 3% on flat and low-rank-plus-noise matrices; full against a numpy float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from weights_helpers import base_weights, record, scan, write_lineage

from ptlens.weights import spectral as SP


def _chunks(A: torch.Tensor, step: int = 128):
    return lambda: (A[i:i + step] for i in range(0, A.shape[0], step))


def _matrices():
    g = torch.Generator().manual_seed(0)
    m, n = 512, 1024
    gauss = torch.randn(m, n, generator=g)
    r = 8
    low = (torch.randn(m, r, generator=g) * torch.linspace(3, 1, r)) @ torch.randn(r, n, generator=g)
    lrn = low / low.norm() * gauss.norm() * 0.5 + gauss
    return {"gaussian": gauss, "low-rank+noise": lrn}


@pytest.mark.parametrize("kind", ["gaussian", "low-rank+noise"])
def test_topk_within_3_percent(kind):
    torch.set_num_threads(1)
    A = _matrices()[kind]
    m, n = A.shape
    ref = np.linalg.svd(A.double().numpy(), compute_uv=False)
    frob2 = float((ref ** 2).sum())
    low = SP.randomized_svd(_chunks(A), (m, n), 16, materialize_below=0)
    S = low.S.double().numpy()
    assert abs(S[0] / ref[0] - 1) <= 0.03
    sr, sr_ref = frob2 / S[0] ** 2, frob2 / ref[0] ** 2
    assert abs(sr / sr_ref - 1) <= 0.03
    e16, e16_ref = (S[:16] ** 2).sum() / frob2, (ref[:16] ** 2).sum() / frob2
    assert abs(e16 / e16_ref - 1) <= 0.03
    # the error estimate covers the actual error of every value
    assert np.all(np.abs(S - ref[:16]) <= low.err.double().numpy() + 1e-6 * ref[0])
    spec = SP.spectrum_errors(low.S, low.err, frob2)
    assert abs(sr - sr_ref) <= spec["stable_rank_err"] + 1e-9


def test_raw_ritz_values_are_lower_bounds_and_history_nested():
    A = _matrices()["gaussian"]
    low = SP.randomized_svd(_chunks(A), A.shape, 16, materialize_below=0)
    ref = torch.linalg.svdvals(A.double())[:16]
    H = low.history.double()
    assert torch.all(H[1:] >= H[:-1] - 1e-4)  # nested Krylov spaces: Ritz values only grow
    assert torch.all(H[-1] <= ref + 1e-4)  # and stay below the truth (Cauchy interlacing)


def test_full_mode_matches_numpy_float64(tmp_path):
    """Every spectral column of --spectral full against numpy float64 on the matrices themselves."""
    base = base_weights()
    g = torch.Generator().manual_seed(4)
    sft = {k: v + 0.05 * v.std() * torch.randn(v.shape, generator=g) for k, v in base.items()}
    res = scan(write_lineage(tmp_path, {"base": base, "sft": sft}), spectral="full")
    k = 16
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.k_proj.weight"):
        r = record(res, name, "base→sft")
        A = base[name].double().numpy()
        B = sft[name].double().numpy()
        D = sft[name].float().double().numpy() - A
        s = np.linalg.svd(D, compute_uv=False)
        f2 = float((D ** 2).sum())
        assert r.spectral["stable_rank"] == pytest.approx(f2 / s[0] ** 2, rel=1e-5)
        assert r.spectral[f"top{k}_energy"] == pytest.approx((s[:k] ** 2).sum() / f2, rel=1e-5)
        p = s / s.sum()
        assert r.spectral["effective_rank"] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-5)
        Ua, Sa, Vha = np.linalg.svd(A, full_matrices=False)
        Ub, Sb, Vhb = np.linalg.svd(B, full_matrices=False)
        kk = min(k, *A.shape)
        cos = np.clip(np.linalg.svd(Ua[:, :kk].T @ Ub[:, :kk], compute_uv=False), 0, 1)
        ang = np.degrees(np.arccos(cos))
        assert r.spectral["subspace_angle_u_max"] == pytest.approx(ang.max(), abs=1e-3)
        assert r.spectral["subspace_angle_u_mean"] == pytest.approx(ang.mean(), abs=1e-3)
        cos_v = np.clip(np.linalg.svd(Vha[:kk].T.T @ Vhb[:kk].T, compute_uv=False), 0, 1)
        assert r.spectral["subspace_angle_v_max"] == pytest.approx(np.degrees(np.arccos(cos_v)).max(), abs=1e-3)
        drift = np.mean(np.abs(Sb[:kk] - Sa[:kk]) / Sa[:kk])
        assert r.spectral["spectral_drift"] == pytest.approx(drift, rel=1e-5)
        assert r.spectral["sigma1_err"] == 0.0
        # principal_overlap from the exact rank-k reconstruction
        R = np.abs((Ua[:, :kk] * Sa[:kk]) @ Vha[:kk])
        top = np.argsort(-R.reshape(-1), kind="stable")[: int(round(0.05 * R.size))]
        changed = (base[name].numpy() != sft[name].numpy()).reshape(-1)
        want = (changed[top].sum() / changed.sum()) / 0.05
        assert r.spectral["principal_overlap"] == pytest.approx(want, rel=1e-9)
