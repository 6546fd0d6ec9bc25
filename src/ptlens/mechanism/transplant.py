"""Delta transplants: model A with B's weights in one part only, measured like any model.

A *part* is a set of tensors: a module group (attention, MLP, embeddings + head, norms) or a
contiguous block of decoder layers (quarters of the depth; one layer each when there are ≤ 4),
plus the tensors outside every layer (embeddings, head, final norm) so that each partition
covers the whole model. The hybrid ``A + ΔW[part]`` is made in memory by copying B's tensors of
that part into A's parameters and restoring A's afterwards: A is loaded once, B's tensors are
read from its safetensors (memory-mapped) one part at a time.

Pure functions (part plans, ΔW shares, token KL, the per-part statistics with bootstrap
intervals) are separate from the model-touching ones (:class:`Swap`, :func:`response_logprobs`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ptlens.stats.bootstrap import Estimate, estimate, paired_difference
from ptlens.stats.multiple import bonferroni_lower_tails
from ptlens.stats.statistic import Batched, Statistic
from ptlens.mechanism.activations import kl_rows
from ptlens.weights.names import parse_name

GROUP_PARTS = (("attention", ("attention",)), ("mlp", ("mlp",)), ("embedding+head", ("embedding", "head")),
               ("norm", ("norm",)), ("other", ("other",)))
NON_LAYER = "non-layer"


@dataclass(frozen=True)
class Part:
    """One piece of ΔW: its name, the partition it belongs to ("groups" or "layers") and its tensors."""

    name: str
    partition: str
    tensors: tuple[str, ...]


def layer_blocks(n_layers: int, blocks: int = 4) -> list[tuple[int, int]]:
    """Contiguous [first, last] layer blocks: one per layer when n ≤ ``blocks``, else ``blocks`` near-equal ones."""
    if n_layers <= blocks:
        return [(i, i) for i in range(n_layers)]
    edges = np.linspace(0, n_layers, blocks + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1]) - 1) for i in range(blocks)]


def plan_parts(names: Sequence[str], n_layers: int, blocks: int = 4) -> list[Part]:
    """Both partitions of the tensor names: module groups, then layer blocks (+ the non-layer tensors).

    Each partition covers every name exactly once, which is what makes the sum-of-parts check
    meaningful. Empty parts are left out.
    """
    roles = {n: parse_name(n) for n in names}
    parts = []
    for pname, groups in GROUP_PARTS:
        ts = tuple(n for n in names if roles[n].group in groups)
        if ts:
            parts.append(Part(pname, "groups", ts))
    for lo, hi in layer_blocks(n_layers, blocks):
        ts = tuple(n for n in names if roles[n].layer is not None and lo <= roles[n].layer <= hi)
        if ts:
            parts.append(Part(f"layer {lo}" if lo == hi else f"layers {lo}-{hi}", "layers", ts))
    rest = tuple(n for n in names if roles[n].layer is None or not 0 <= roles[n].layer < n_layers)
    if rest:
        parts.append(Part(NON_LAYER, "layers", rest))
    return parts


def part_shares(parts: Sequence[Part], sq: Mapping[str, float]) -> dict[str, float]:
    """Each part's share of ‖ΔW‖²_F (parts of one partition sum to 1; NaN when ΔW = 0)."""
    total = sum(sq.values())
    return {p.name: (sum(sq[t] for t in p.tensors) / total if total > 0 else float("nan")) for p in parts}


# ---------------------------------------------------------------- in-memory hybrids


_EXPERT = re.compile(r"^(?P<pre>.*)\.(?:block_sparse_moe|mlp)\.experts\.(?P<e>\d+)\."
                     r"(?P<w>w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$")
_GATE_UP = {"w1": 0, "gate_proj": 0, "w3": 1, "up_proj": 1}
"""Which half of a fused ``experts.gate_up_proj`` (experts × 2·intermediate × hidden) a stored expert matrix is."""


class Swap:
    """Copy B's tensors of a part into a loaded model A in place; ``restore`` puts A's back bit for bit.

    Tensor names are the checkpoint's (safetensors) names; they map to the model's parameter
    names directly or with the ``model.`` prefix added or removed. Mixture-of-experts checkpoints
    store one matrix per expert (Mixtral ``block_sparse_moe.experts.3.w1``, Qwen2-MoE/OLMoE
    ``mlp.experts.3.gate_proj``) where transformers ≥ 5 fuses them into ``mlp.experts.gate_up_proj``
    and ``down_proj`` (experts first, gate rows before up rows) and renames Mixtral's router
    ``block_sparse_moe.gate`` to ``mlp.gate``: each stored expert maps to its slice of the fused
    parameter, so experts are transplanted one by one. Vocabulary matrices of different sizes are
    swapped over the rows both have (added rows cannot exist in A).
    """

    def __init__(self, model: Any):
        self.params = dict(model.named_parameters())
        self.saved: dict[str, torch.Tensor] = {}

    def _param(self, name: str) -> str | None:
        for cand in (name, name.removeprefix("model."), "model." + name):
            if cand in self.params:
                return cand
        return None

    def locate(self, name: str) -> tuple[str, tuple] | None:
        """The model parameter holding stored tensor ``name`` and the index of its slice (() for the whole)."""
        pn = self._param(name) or self._param(name.replace(".block_sparse_moe.", ".mlp."))
        if pn is not None:
            return pn, ()
        m = _EXPERT.match(name)
        if m is None:
            return None
        pn = self._param(f"{m['pre']}.mlp.experts." + ("gate_up_proj" if m["w"] in _GATE_UP else "down_proj"))
        if pn is None or self.params[pn].ndim != 3 or int(m["e"]) >= self.params[pn].shape[0]:
            return None
        e = int(m["e"])
        if m["w"] not in _GATE_UP:
            return pn, (e,)
        half = self.params[pn].shape[1] // 2
        return pn, (e, slice(_GATE_UP[m["w"]] * half, (_GATE_UP[m["w"]] + 1) * half))

    def param_name(self, name: str) -> str | None:
        loc = self.locate(name)
        return None if loc is None else loc[0]

    def view(self, name: str) -> torch.Tensor:
        """A's values of stored tensor ``name``: its parameter, or the slice of a fused one (a view: writes go through)."""
        loc = self.locate(name)
        if loc is None:
            raise KeyError(name)
        pn, idx = loc
        return self.params[pn][idx] if idx else self.params[pn]

    def apply(self, tensors: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, t in tensors.items():
                pn = self.param_name(name)
                if pn is None:
                    raise KeyError(name)
                if pn not in self.saved:
                    self.saved[pn] = self.params[pn].detach().to("cpu", copy=True)
                p = self.view(name)
                if tuple(t.shape) == tuple(p.shape):
                    p.copy_(t.to(p.dtype))
                elif t.ndim == p.ndim and tuple(t.shape[1:]) == tuple(p.shape[1:]):
                    rows = min(p.shape[0], t.shape[0])
                    p[:rows].copy_(t[:rows].to(p.dtype))
                else:
                    raise ValueError(f"{name}: stored shape {tuple(t.shape)} does not fit the model's {tuple(p.shape)}")

    def restore(self) -> None:
        with torch.no_grad():
            for pn, t in self.saved.items():
                self.params[pn].copy_(t)
        self.saved.clear()


def untie_head(model: Any) -> bool:
    """Give a model with tied embeddings a head parameter of its own (a copy of its embedding; same outputs), so a
    transplant can set the head from an untied B without touching A's input embedding. False when already untied."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or head.weight is not emb.weight:
        return False
    head.weight = torch.nn.Parameter(emb.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    return True


# ---------------------------------------------------------------- teacher-forced distributions


def response_logprobs(model: Any, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int,
                      vocab: int | None = None, batch_tokens: int = 1 << 14,
                      reduce: Callable[[int, torch.Tensor], Any] | None = None) -> list:
    """Full-vocabulary next-token log-probs (float32, CPU) at each response token of each (prompt, response).

    Row t of pair i is the distribution that predicted response token t. ``vocab`` cuts the
    distribution to the vocabulary two models share before normalising. With ``reduce``, the
    result for pair i is ``reduce(i, logp)`` computed where the logits are (e.g. KL sums against
    stored references), so a hybrid's tokens × vocabulary log-probs are never kept.
    """
    dev = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    batch: list[int] = []

    def flush() -> None:
        if not batch:
            return
        seqs = [pairs[i][0] + pairs[i][1] for i in batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for j, s in enumerate(seqs):
            ids[j, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[j, :len(s)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits
            for j, i in enumerate(batch):
                p, r = pairs[i]
                lg = logits[j, len(p) - 1:len(p) + len(r) - 1, :vocab].float()
                lp = torch.log_softmax(lg, dim=-1)
                out[i] = lp.cpu() if reduce is None else reduce(i, lp)
        batch.clear()

    for i in order:
        width = len(pairs[i][0]) + len(pairs[i][1])
        if batch and (len(batch) + 1) * width > batch_tokens:
            flush()
        batch.append(i)
    flush()
    return out  # type: ignore[return-value]


def kl_sums(ref: Sequence[torch.Tensor], other: Sequence[torch.Tensor]) -> np.ndarray:
    """Σ over each response's tokens of KL(p_ref ‖ p_other): one number per problem."""
    return np.array([kl_sum(r, o) for r, o in zip(ref, other)])


def kl_sum(ref: torch.Tensor, other: torch.Tensor) -> float:
    """Σ over one response's tokens of KL(p_ref ‖ p_other), on ``other``'s device."""
    return float(kl_rows(ref.to(other.device), other).double().sum()) if ref.shape[0] else 0.0


# ---------------------------------------------------------------- per-part statistics


@dataclass
class Measured:
    """One model or hybrid on the transplant problems: per-problem greedy correctness and Σ KL to A and to B."""

    correct: np.ndarray
    kl_to_a: np.ndarray
    kl_to_b: np.ndarray


def _est(e: Estimate) -> dict:
    return {"value": _num(e.value), "lo": _num(e.lo), "hi": _num(e.hi)}


def _num(x) -> float | None:
    return float(x) + 0.0 if x is not None and math.isfinite(float(x)) else None  # + 0.0: no "-0"


def _ratio(num: Callable, den: Callable) -> Batched:
    """num(w) / den(w) for one weight vector (None: the point value) or all resamples at once (rows of w)."""
    def f(w):
        n, d = np.asarray(num(w), dtype=float), np.asarray(den(w), dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d != 0, n / np.where(d != 0, d, 1.0), np.nan)
    return Batched(many=f, one=lambda: float(f(None)))


def _batched(f: Callable) -> Batched:
    return Batched(many=f, one=lambda: float(f(None)))


def _wsum(v: np.ndarray):
    """Σ_p v_p for the point value, w @ v for resamples (w: one row or a matrix of them)."""
    return lambda w: float(v.sum()) if w is None else w @ v


def part_statistics(m: Measured, a: Measured, b: Measured, tokens: np.ndarray, weights: np.ndarray,
                    family: int = 1) -> dict:
    """Accuracy, KL to A and B (per token), and the shares of the A→B change it recovers, with 95% intervals.

    - ``accuracy``: greedy accuracy over problems; ``acc_change``: paired difference to A.
    - ``acc_recovered`` = (acc_part − acc_A) / (acc_B − acc_A): NaN when A and B score the same.
    - ``kl_recovered`` = 1 − KL(B ‖ part) / KL(B ‖ A), token-weighted over B's responses: the
      share of A's distance to B (on B's own answers) that the part's transplant removes.
    Intervals resample problems with the same ``weights`` for every row (paired). ``*_recovered_fw`` hold the
    one-sided lower bound at level 1 − 0.05/``family`` (Bonferroni over the ``family`` parts whose claims are read
    together): a "carries" claim made from it is wrong for at most 5% of transitions, however many parts there are.
    """
    fw = bonferroni_lower_tails(family)
    acc = Statistic.mean(m.correct.astype(float))
    acc_a, acc_b = Statistic.mean(a.correct.astype(float)), Statistic.mean(b.correct.astype(float))
    gain = _ratio(lambda w: _mean(m.correct, w) - _mean(a.correct, w), lambda w: _mean(b.correct, w) - _mean(a.correct, w))
    kl_rec = _ratio(lambda w: _wsum(a.kl_to_b)(w) - _wsum(m.kl_to_b)(w), _wsum(a.kl_to_b))
    return {
        "accuracy": _est(estimate(acc, weights)),
        "acc_change": _est(paired_difference(acc, acc_a, weights)),
        "acc_recovered": _est(estimate(gain, weights)) if acc_b.value() != acc_a.value() else _est(Estimate(float("nan"), float("nan"), float("nan"))),
        "acc_recovered_fw": _est(estimate(gain, weights, fw)) if acc_b.value() != acc_a.value() else _est(Estimate(float("nan"), float("nan"), float("nan"))),
        "kl_to_a": _est(estimate(Statistic(m.kl_to_a, tokens.astype(float)), weights)),
        "kl_to_b": _est(estimate(Statistic(m.kl_to_b, tokens.astype(float)), weights)),
        "kl_recovered": _est(estimate(kl_rec, weights)) if a.kl_to_b.sum() > 0 else _est(Estimate(float("nan"), float("nan"), float("nan"))),
        "kl_recovered_fw": _est(estimate(kl_rec, weights, fw)) if a.kl_to_b.sum() > 0 else _est(Estimate(float("nan"), float("nan"), float("nan"))),
    }


def sum_of_parts(parts: Sequence[Measured], a: Measured, b: Measured, weights: np.ndarray) -> dict:
    """The additivity check of one partition: Σ over parts of the accuracy change and of the recovered shares.

    If the parts acted independently, Σ acc_change = acc_B − acc_A and Σ kl_recovered ≈ 1.
    """
    def acc_sum(w):
        return sum(_mean(p.correct, w) - _mean(a.correct, w) for p in parts)

    kl_sum = _ratio(lambda w: sum(_wsum(a.kl_to_b)(w) - _wsum(p.kl_to_b)(w) for p in parts), _wsum(a.kl_to_b))
    acc_share = _ratio(acc_sum, lambda w: _mean(b.correct, w) - _mean(a.correct, w))

    whole = Statistic.mean(b.correct.astype(float)).value() - Statistic.mean(a.correct.astype(float)).value()
    nan = _est(Estimate(float("nan"), float("nan"), float("nan")))
    return {"acc_change": _est(estimate(_batched(acc_sum), weights)),
            "acc_recovered": _est(estimate(acc_share, weights)) if whole != 0 else nan,
            "kl_recovered": _est(estimate(kl_sum, weights)) if a.kl_to_b.sum() > 0 else nan}


def _mean(v: np.ndarray, w: np.ndarray | None):
    """Mean over problems: plain, or under bootstrap weights (one row, or a matrix of rows → one value per row)."""
    v = v.astype(float)
    return float(v.mean()) if w is None else (w @ v) / w.sum(-1)
