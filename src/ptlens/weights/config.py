"""What ``ptlens weights`` is asked to do: :class:`ScanConfig` (each option's default, help text and check on its
field: :mod:`ptlens.config_fields`). Apart from the plan so that the CLI builds its options without importing the
checkpoint index."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ptlens.config_fields import ALLOW_PICKLE, DEVICE, at_least, check_fields, rule, setting
from ptlens.errors import PtlensError


def _regex(pattern: str | None, name: str) -> str | None:
    if pattern:
        try:
            re.compile(pattern)
        except re.error as e:
            return f"{name} '{pattern}' is not a valid regular expression ({e})"
    return None


@dataclass
class ScanConfig:
    """Everything that changes a scan's numbers; stored with every result.

    Memory per tensor (docs/SCALING.md, measured in docs/BENCHMARKS.md): ``off`` holds one
    ``chunk_mb`` chunk per checkpoint. ``topk`` keeps an m × n matrix resident as float32 only
    when its checkpoints fit ``spectral_resident_mb``; larger ones stream, holding one chunk per W
    and ΔW (c = checkpoints + changed ΔWs matrices) and, per matrix, its Krylov basis and QᵀA:
    4·c·(m + n)·ℓ(q + 1) bytes, ℓ = k + oversample, q = power_iters (c = 3, defaults: 0.23 GB
    for 128256 × 16384) — linear in m + n, never m·n. ``full`` needs about four float32 copies of
    a matrix (``full_memory_bytes``) and refuses before any work what does not fit.
    """

    spectral: Literal["off", "topk", "full"] = setting(
        "topk", flag="--spectral", check=rule(lambda v: v in ("off", "topk", "full"),
                                              "{name} must be off, topk or full, not {value!r}"),
        help="off; topk (randomized block-Krylov SVD, ~1% with a per-value error estimate); or full (exact SVDs of "
             "W_A, W_B and ΔW, every spectral column exact; slow on CPU: minutes per large matrix, hours for an 8B "
             "model).")
    k: int = setting(16, flag="--k", help="Rank k of the spectral metrics.",
                     check=rule(lambda v: v >= 1, "{name} must be at least 1"))
    oversample: int = 10
    power_iters: int = 4
    tolerance: float = setting(1e-5, flag="--tolerance", help="|Δ| threshold of changed_tol.",
                               check=rule(lambda v: v >= 0, "{name} must be non-negative"))
    alpha: float = setting(0.05, help="Share α of the largest |rank-k W_A| entries that principal_overlap compares the changed ones with.",
                           check=rule(lambda v: 0 < v < 1, "--alpha must lie in (0, 1)"))
    layer_pattern: str | None = setting(None, flag="--layer-pattern", check=_regex,
                                        help="Only tensors whose name matches this regex (e.g. 'layers\\.0\\.').")
    device: str = DEVICE.field(check=rule(lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"),
                                          "{name} must be cpu, cuda or auto, not {value!r}"))
    workers: int | None = setting(None, flag="--workers", check=at_least(1), help=(
        "CPU threads (default: the cores not busy with other work; PTLENS_THREADS sets it for every command)."))
    chunk_mb: int = 32
    spectral_resident_mb: int = 256
    backend: Literal["auto", "numba", "torch"] = "auto"
    allow_pickle: bool = ALLOW_PICKLE.field()

    def validate(self) -> None:
        """Every field's check, then what ``--device cuda`` needs here."""
        check_fields(self)
        if self.device.startswith("cuda"):
            import torch  # only here: a CPU scan of bf16/float32 never imports it

            if not torch.cuda.is_available():
                raise PtlensError("--device cuda: no CUDA device is available to torch here")

    def fingerprint(self, device: str, backend: str) -> dict:
        """The settings that change a scan's numbers, with the device and backend ``auto`` resolved to: what stored
        results and the scan journal are keyed by (threads, ``allow_pickle`` and how the tasks are executed
        change no number)."""
        from ptlens.results.reuse import settings_of

        return {**settings_of(self, drop=("workers", "allow_pickle", "device", "backend")),
                "device_used": device, "backend_used": backend}
