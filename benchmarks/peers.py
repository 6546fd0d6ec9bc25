"""Adapters for peer tools (PyPI) that diff two checkpoints, for bench_weights item 4.

Each `Peer` turns one transition (checkpoint folder A → checkpoint folder B) into a complete,
non-interactive argv that the harness runs as a subprocess (timed, peak RSS from os.wait4).
Every argv starts with `sys.executable`, so the peer runs in the harness's own interpreter (no
pyenv shim or extra process in the measurement) and only local folders are read: both tools skip
the Hugging Face Hub when given an existing directory.

    pip install modeldelta==0.4.4 weightscope==0.4.3     # neither pins torch (torch>=2.0)

What each computes, against ptlens's element-wise metrics (‖ΔW‖_F, ‖ΔW‖_F/‖W_A‖_F,
changed_exact = share of entries with a_i != b_i, changed_tol = share with |Δ| > tol):

- modeldelta 0.4.4 (`modeldelta A B -o out.json`): per tensor with ≥ 1000 entries and equal
  shapes, ‖ΔW‖_F, ‖ΔW‖_F/‖W_A‖_F, cos(W_A, W_B) and "sparsity" = share of |Δ| < 1e-5 (so
  1 - sparsity ≈ ptlens changed_tol at --tolerance 1e-5), in fp32. It ALWAYS also runs a full
  `torch.linalg.svdvals` of every 2-D delta (randomized top-k only when min(shape) > 8192), which
  cannot be switched off: that is ptlens `--spectral full`'s closest equivalent, not `off`.
  The "modeldelta-nosvd" entry runs the same CLI with `torch.linalg.svdvals` stubbed out, as a
  lower bound on modeldelta's element-wise cost (not a mode the tool offers).
- weightscope 0.4.3 (`weightscope diff A B --threshold 0`): per tensor n_changed (|Δ| > threshold;
  with 0 this is ptlens changed_exact, bit-for-bit), max |Δ| and mean |Δ| in fp32. No Frobenius
  norm and no relative change at all.

Both stream tensor by tensor (safetensors `safe_open(...).get_tensor`, one pair at a time, never
a whole model) and run one transition per process: each checkpoint of a lineage is read once per
transition it takes part in, not once overall.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Peer:
    name: str
    package: str                      # distribution name on PyPI
    version: str                      # version the adapter was written and checked against
    equivalent: str                   # what it computes, in ptlens terms
    notes: str                        # limitations that matter when reading the numbers
    argv: Callable[[str, str, str], list[str]] = field(repr=False)
    summarize: Callable[[str], dict] = field(repr=False)   # reads its output from out_dir

    @property
    def install_hint(self) -> str:
        return f"pip install {self.package}=={self.version}"

    def available(self) -> bool:
        try:
            importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return False
        return importlib.util.find_spec(self.package) is not None

    def installed_version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def command(self, a_dir: str | Path, b_dir: str | Path, out_dir: str | Path) -> list[str]:
        """Complete argv for one transition a_dir → b_dir; results go under out_dir (created)."""
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return self.argv(str(a_dir), str(b_dir), str(out_dir))


# ── modeldelta ──────────────────────────────────────────────────────────────────────────────

_MD_JSON = "modeldelta.json"

# `python -m modeldelta` works (it ships __main__.py); -q keeps huggingface_hub bars off.
def _modeldelta_argv(a: str, b: str, out: str) -> list[str]:
    return [sys.executable, "-m", "modeldelta", a, b, "-o", str(Path(out) / _MD_JSON), "-q"]


# Same CLI, with the per-tensor SVD replaced by a constant: only the element-wise work remains.
_MD_NOSVD = (
    "import sys, torch\n"
    "torch.linalg.svdvals = lambda A, *a, **k: A.new_ones(1)\n"
    "from modeldelta.cli import main\n"
    "sys.argv = ['modeldelta', *sys.argv[1:]]\n"
    "main()\n"
)


def _modeldelta_nosvd_argv(a: str, b: str, out: str) -> list[str]:
    return [sys.executable, "-c", _MD_NOSVD, a, b, "-o", str(Path(out) / _MD_JSON), "-q"]


def _modeldelta_summary(out: str) -> dict:
    d = json.loads((Path(out) / _MD_JSON).read_text())
    mods = d["modules"]
    n = sum(m["n_params"] for m in mods)
    sum_d2 = sum(m["frob_norm"] ** 2 for m in mods)
    sum_a2 = sum((m["frob_norm"] / m["frob_norm_relative"]) ** 2 for m in mods if m["frob_norm_relative"])
    return {
        "tensors": len(mods),
        "skipped": d["n_skipped"],
        "params": n,
        "delta_norm": sum_d2 ** 0.5,
        "rel_change": (sum_d2 / sum_a2) ** 0.5 if sum_a2 else None,
        "changed_tol_1e-5": sum((1 - m["sparsity"]) * m["n_params"] for m in mods) / n if n else None,
        "profile": d.get("diagnostics", {}).get("profile_tag"),
    }


_MD_EQUIV = ("per tensor: ‖ΔW‖_F, ‖ΔW‖_F/‖W_A‖_F, cos(W_A,W_B), share |Δ|<1e-5 (= 1 − changed_tol), "
             "fp32")
_MD_SVD_NOTE = (
    "Always runs full svdvals of every 2-D delta (effective rank, top-20 energy, spectral decay); "
    "no flag disables it, so compare with ptlens --spectral full. ")
_MD_COMMON_NOTES = (
    "Skips tensors with < 1000 entries "
    "(norm vectors) and tensors whose shape changed (resized embed_tokens/lm_head), so those are "
    "absent from its numbers. Streams one tensor pair at a time, but holds both bf16 tensors plus "
    "~4 fp32 temporaries of the largest tensor (≈ 20 B/entry: ~10 GB for an 8B embedding), plus "
    "the SVD workspace. Opens the shard with safe_open for every tensor; gc.collect() per tensor. "
    "One transition per run: a checkpoint is re-read for each transition."
)
_MD_NOTES = _MD_SVD_NOTE + _MD_COMMON_NOTES

# ── weightscope ─────────────────────────────────────────────────────────────────────────────

_WS_MD = "weightscope.md"

# No __main__ module: call its click group; click reads sys.argv[1:].
_WS_MAIN = "from weightscope.cli import main; main()"


def _weightscope_argv(a: str, b: str, out: str) -> list[str]:
    return [sys.executable, "-c", _WS_MAIN, "diff", a, b, "--threshold", "0",
            "-o", str(Path(out) / _WS_MD)]


def _weightscope_summary(out: str) -> dict:
    text = (Path(out) / _WS_MD).read_text()

    def num(label: str) -> int | None:
        m = re.search(rf"{label}: \*\*([\d,]+)\*\*", text)
        return int(m.group(1).replace(",", "")) if m else None

    total, changed = num("Total params compared"), num("Changed params")
    m = re.search(r"classification: `(\w+)`", text)
    return {
        "params": total,
        "changed": changed,
        "changed_exact": changed / total if total else None,
        "classification": m.group(1) if m else None,
    }


_WS_EQUIV = "per tensor: share of entries with |Δ| > 0 (= changed_exact), max |Δ|, mean |Δ|, fp32"
_WS_NOTES = (
    "No Frobenius norm and no relative change: only counts and max/mean |Δ|. The markdown report "
    "lists only aggregates and the top 15 tensors (per-tensor stats exist only via the Python API). "
    "A tensor whose shape changed (resized vocabulary) is counted as fully changed without any "
    "arithmetic. Streams one tensor pair at a time (copies both bf16 tensors, then ~3 fp32 "
    "temporaries: ≈ 16 B/entry of the largest tensor, ~8 GB for an 8B embedding); re-opens B's "
    "shard with safe_open for every tensor. One transition per run."
)

PEERS: dict[str, Peer] = {
    "modeldelta": Peer("modeldelta", "modeldelta", "0.4.4", _MD_EQUIV + " + full SVD of each delta",
                       _MD_NOTES, _modeldelta_argv, _modeldelta_summary),
    "modeldelta-nosvd": Peer(
        "modeldelta-nosvd", "modeldelta", "0.4.4", _MD_EQUIV + " (SVD stubbed out)",
        "Not a mode modeldelta offers: the same CLI with torch.linalg.svdvals replaced by a constant, "
        "to show its element-wise cost alone (spectral fields in its JSON are then meaningless). "
        + _MD_COMMON_NOTES,
        _modeldelta_nosvd_argv, _modeldelta_summary),
    "weightscope": Peer("weightscope", "weightscope", "0.4.3", _WS_EQUIV, _WS_NOTES,
                        _weightscope_argv, _weightscope_summary),
}


if __name__ == "__main__":   # python benchmarks/peers.py A B OUT: run every available peer once
    import subprocess
    import time

    a_dir, b_dir, out_root = sys.argv[1:4]
    for key, p in PEERS.items():
        if not p.available():
            print(f"{key}: not installed ({p.install_hint})")
            continue
        out = Path(out_root) / key
        t0 = time.perf_counter()
        r = subprocess.run(p.command(a_dir, b_dir, out), capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if r.returncode:
            print(f"{key}: rc={r.returncode}\n{r.stderr[-2000:]}")
            continue
        print(f"{key}: {dt:.1f} s {p.summarize(str(out))}")
