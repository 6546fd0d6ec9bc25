"""Memory of the spectral modes: ``full`` refuses up front what will not fit; ``topk``'s overlap pass is exact
in bounded memory, ties included."""

from __future__ import annotations

import csv

import pytest
import torch
from typer.testing import CliRunner

from ptlens.cli import app
from ptlens.errors import PtlensError
from ptlens.weights import memory as MEM
from ptlens.weights import tensor_scan as S
from ptlens.weights import spectral as SP
from weights_helpers import SHAPE, base_weights, scan, write_lineage

runner = CliRunner()
Q = "model.layers.0.self_attn.q_proj.weight"


def _pair(tmp_path):
    """base, and sft = base + a rank-1 update of one q_proj (exact in float32)."""
    base = base_weights(dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(64, 1, generator=g), torch.randn(1, 64, generator=g)
    sft = {k: t.clone() for k, t in base.items()}
    sft[Q] = base[Q] + 1e-2 * (u @ v)
    return write_lineage(tmp_path / "lin", {"base": base, "sft": sft})


def _largest_need() -> tuple[int, str]:
    shapes = {n: s for n, s in SHAPE.tensor_shapes().items() if len(s) == 2}
    return max((MEM.full_memory_bytes(s, 2), n) for n, s in shapes.items())


def test_full_memory_bytes_from_the_shape():
    # float32 path (> 2^24 entries), not resident: 4 float32 copies + Vᵀ and gesdd's 4·min² workspace
    m, n = 128256, 16384
    assert MEM.full_memory_bytes((m, n)) == 16 * m * n + 20 * n * n == 38_990_249_984
    # 9000 × 2000 fits the 256 MB resident budget (3 × 72 MB): two resident copies on top
    assert MEM.full_memory_bytes((9000, 2000)) == 2 * 4 * 18_000_000 + 16 * 18_000_000 + 20 * 2000 ** 2
    # float64 working copies up to 2^24 entries
    assert MEM.full_memory_bytes((4096, 4096), resident_mb=0) == 4 * 4096 ** 2 + 3 * 8 * 4096 ** 2 + 5 * 8 * 4096 ** 2


def test_full_refuses_before_any_scanning_with_one_line(tmp_path, monkeypatch):
    args = _pair(tmp_path)
    need, name = _largest_need()
    assert name == "model.embed_tokens.weight"
    budget = need - 1  # one byte short of the largest matrix
    monkeypatch.setenv("PTLENS_MEMORY_BUDGET", str(budget))
    scanned = []
    real = S.scan_tensor
    monkeypatch.setattr(S, "scan_tensor", lambda task, *a, **k: scanned.append(task.name) or real(task, *a, **k))
    out = tmp_path / "out"
    res = runner.invoke(app, ["weights", "--models", *args, "--spectral", "full", "--output-dir", str(out)])
    assert res.exit_code == 2, res.output
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert len(lines) == 1
    assert (f"--spectral full: model.embed_tokens.weight (256 × 64) needs {need:,} bytes" in lines[0]
            and f"{budget:,} bytes" in lines[0] and "PTLENS_MEMORY_BUDGET" in lines[0]), lines[0]
    assert scanned == [] and not (out / "weights" / "tensors.csv").exists()
    # the library says the same, from the plan alone
    with pytest.raises(PtlensError, match=r"model\.embed_tokens\.weight \(256 × 64\) needs"):
        scan(args, spectral="full")
    # topk and off never refuse on memory
    monkeypatch.setenv("PTLENS_MEMORY_BUDGET", "1MiB")
    assert scan(args, spectral="off", layer_pattern="q_proj").records


def test_full_runs_when_the_largest_matrix_just_fits(tmp_path, monkeypatch):
    args = _pair(tmp_path)
    need, _ = _largest_need()
    monkeypatch.setenv("PTLENS_MEMORY_BUDGET", str(need))
    out = tmp_path / "out"
    res = runner.invoke(app, ["weights", "--models", *args, "--spectral", "full", "--no-figures",
                              "--output-dir", str(out)])
    assert res.exit_code == 0, res.output
    rows = {r["tensor"]: r for r in csv.DictReader((out / "weights" / "tensors.csv").open())}
    q = rows[Q]  # the planted rank-1 ΔW, decomposed exactly
    assert float(q["stable_rank"]) == pytest.approx(1.0, abs=1e-4)
    assert float(q["rank_fraction"]) == pytest.approx(1 / 64)


def test_memory_budget_must_be_a_number(tmp_path, monkeypatch):
    args = _pair(tmp_path)
    monkeypatch.setenv("PTLENS_MEMORY_BUDGET", "lots")
    res = runner.invoke(app, ["weights", "--models", *args, "--spectral", "full", "--output-dir", str(tmp_path / "o")])
    assert res.exit_code == 2 and "PTLENS_MEMORY_BUDGET: expected bytes such as 500MB or 80GiB, got 'lots'" in res.output


def test_the_old_memory_variable_is_refused_with_its_new_name(tmp_path, monkeypatch):
    """A limit set under the old name is never silently ignored (one variable for every step now)."""
    args = _pair(tmp_path)
    monkeypatch.setenv("PTLENS_MEMORY_MB", "512")
    res = runner.invoke(app, ["weights", "--models", *args, "--spectral", "full", "--output-dir", str(tmp_path / "o")])
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "PTLENS_MEMORY_MB was renamed: set PTLENS_MEMORY_BUDGET instead" in lines[0] and "512MiB" in lines[0]


def _brute(R: torch.Tensor, masks: torch.Tensor, alpha: float):
    """Top-α of |R| by value, ties in row-major order (what a stable descending sort takes)."""
    flat = R.abs().reshape(-1)
    kth = max(1, round(alpha * flat.numel()))
    order = torch.argsort(flat, descending=True, stable=True)[:kth]
    top = torch.zeros(flat.numel(), dtype=torch.bool)
    top[order] = True
    return [(int((m.reshape(-1) & top).sum()), int(m.sum())) for m in masks], float(flat[order[-1]])


@pytest.mark.parametrize("step", [3, 7, 1000])
@pytest.mark.parametrize("kind", ["ties", "gaussian", "zeros"])
def test_principal_overlap_threshold_exact_with_ties(step, kind):
    g = torch.Generator().manual_seed(3)
    if kind == "ties":  # four distinct values: the top 5% cuts through the entries equal to the largest
        R = torch.randint(-3, 4, (120, 50), generator=g).float()
    elif kind == "zeros":
        R = torch.zeros(120, 50)
    else:
        R = torch.randn(120, 50, generator=g)
    masks = torch.rand(3, 120, 50, generator=g) < torch.tensor([0.1, 0.5, 0.9]).view(3, 1, 1)
    out, threshold = SP.principal_overlap_threshold(lambda: (R[i:i + step] for i in range(0, 120, step)),
                                                    lambda: (masks[:, i:i + step] for i in range(0, 120, step)),
                                                    R.numel(), 0.05)
    want, want_t = _brute(R, masks, 0.05)
    assert [(i, n) for _, i, n in out] == want
    assert threshold == want_t
    if kind == "ties":
        assert int((R.abs() == want_t).sum()) > round(0.05 * R.numel())  # the case the third pass exists for


def test_krylov_basis_in_one_buffer_matches_exact_svd():
    """The streamed (preallocated-basis) path finds a planted spectrum of a matrix it never holds whole."""
    g = torch.Generator().manual_seed(4)
    m, n = 3000, 400
    U = torch.linalg.qr(torch.randn(m, 40, generator=g)).Q
    V = torch.linalg.qr(torch.randn(n, 40, generator=g)).Q
    s = torch.logspace(1, -1, 40)
    A = (U * s) @ V.T + 1e-4 * torch.randn(m, n, generator=g)
    low = SP.randomized_svd(lambda: (A[i:i + 256] for i in range(0, m, 256)), (m, n), 8, seed=1)
    exact = torch.linalg.svdvals(A.double())[:8].float()
    assert torch.allclose(low.S, exact, rtol=1e-3)
    assert torch.allclose(low.U.T @ low.U, torch.eye(8), atol=1e-4)
