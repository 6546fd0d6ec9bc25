"""Activation diffing of two models on the same tokens: CKA, relative difference, logit lens, ADL.

Pure tensor functions plus the two passes that feed them (one model in memory at a time):
:func:`record_pass` runs the *first* model over every batch and keeps only its residual
streams (and a copy of its final norm and unembedding); :func:`compare_pass` runs the second
model over the same batches and folds both into per-layer sums. Nothing here reads or writes
files.

Layer convention (docs/MECHANISM.md): layer L is the residual stream after decoder layer L
(0-based); layer −1 is the embedding output.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

# ---------------------------------------------------------------- CKA


@dataclass
class CKAStats:
    """Running sums for linear CKA of two (tokens × d) streams without a tokens × tokens Gram matrix.

    CKA(X, Y) = ‖Y_cᵀX_c‖²_F / (‖X_cᵀX_c‖_F ‖Y_cᵀY_c‖_F) with X_c, Y_c column-centred. We keep
    n, Σx, Σy, XᵀX, YᵀY, YᵀX (float64, d × d each) and centre at the end:
    X_cᵀX_c = XᵀX − n μ_x μ_xᵀ. Residual streams carry large constant components, so every row
    is first shifted by a fixed reference (the first batch's column mean): CKA is invariant to
    shifts, and the shift keeps the uncentred sums small enough that the subtraction does not
    cancel away the signal.
    """

    shift_x: torch.Tensor | None = None
    shift_y: torch.Tensor | None = None
    n: int = 0
    sx: torch.Tensor | None = None
    sy: torch.Tensor | None = None
    xx: torch.Tensor | None = None
    yy: torch.Tensor | None = None
    yx: torch.Tensor | None = None

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows of X (model A) and the matching rows of Y (model B)."""
        if x.shape[0] == 0:
            return
        x = x.float()
        y = y.float()
        if self.shift_x is None:
            self.shift_x = x.mean(0)
            self.shift_y = y.mean(0)
            d_x, d_y = x.shape[1], y.shape[1]
            kw = dict(dtype=torch.float64, device=x.device)
            self.sx, self.sy = torch.zeros(d_x, **kw), torch.zeros(d_y, **kw)
            self.xx, self.yy, self.yx = (torch.zeros(d_x, d_x, **kw), torch.zeros(d_y, d_y, **kw),
                                         torch.zeros(d_y, d_x, **kw))
        x = x - self.shift_x
        y = y - self.shift_y
        self.n += x.shape[0]
        self.sx += x.sum(0).double()
        self.sy += y.sum(0).double()
        self.xx += (x.T @ x).double()
        self.yy += (y.T @ y).double()
        self.yx += (y.T @ x).double()

    def value(self) -> float:
        """Linear CKA of everything added; NaN with fewer than two rows or a constant stream."""
        if self.n < 2:
            return float("nan")
        mx, my = self.sx / self.n, self.sy / self.n
        xx = self.xx - self.n * torch.outer(mx, mx)
        yy = self.yy - self.n * torch.outer(my, my)
        yx = self.yx - self.n * torch.outer(my, mx)
        den = torch.linalg.matrix_norm(xx) * torch.linalg.matrix_norm(yy)
        if den <= 0:
            return float("nan")
        return float(torch.linalg.matrix_norm(yx) ** 2 / den)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two (tokens × d) matrices in one call (streams through :class:`CKAStats`)."""
    s = CKAStats()
    s.update(x, y)
    return s.value()


# ---------------------------------------------------------------- per-token quantities


def rel_diff(h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
    """‖h_B − h_A‖ / ‖h_A‖ per row (token), in float32; 0 where both are 0."""
    a, b = h_a.float(), h_b.float()
    num = torch.linalg.vector_norm(b - a, dim=-1)
    den = torch.linalg.vector_norm(a, dim=-1)
    return torch.where(num == 0, torch.zeros_like(num), num / den)


def kl_rows(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row from log-probabilities (full vocabulary), in float32; exactly 0 when p = q."""
    logp, logq = logp.float(), logq.float()
    return (logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0)


@dataclass
class Head:
    """A model's way from the residual stream to next-token log-probs: its final norm and unembedding.

    A deep copy, so it survives the model it came from (the first pass keeps model A's head
    while model B runs). ``vocab`` limits the readout to the vocabulary both models share.
    """

    norm: Any
    unembed: Any
    vocab: int

    @classmethod
    def of(cls, model: Any, vocab: int | None = None, copy_modules: bool = True) -> "Head":
        norm, unembed = final_norm(model), model.get_output_embeddings()
        if copy_modules:
            norm, unembed = copy.deepcopy(norm), copy.deepcopy(unembed)
        v = int(unembed.weight.shape[0])
        return cls(norm, unembed, min(v, vocab) if vocab else v)

    def logprobs(self, h: torch.Tensor) -> torch.Tensor:
        """log softmax(unembed(final_norm(h))) over the shared vocabulary, float32 (the logit lens)."""
        w = self.unembed.weight
        z = self.unembed(self.norm(h.to(device=w.device, dtype=w.dtype)))[..., :self.vocab]
        return torch.log_softmax(z.float(), dim=-1)

    def read(self, direction: torch.Tensor) -> torch.Tensor:
        """Logits of a residual-stream direction through this head (final norm applied, as the model would)."""
        w = self.unembed.weight
        return self.unembed(self.norm(direction.to(device=w.device, dtype=w.dtype)[None]))[0, :self.vocab].float()


def final_norm(model: Any) -> Any:
    """The norm applied to the last residual stream before the unembedding (Llama: ``model.model.norm``)."""
    dec = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", model)
    for attr in ("norm", "final_layernorm", "ln_f", "final_layer_norm"):
        m = getattr(dec, attr, None)
        if m is not None:
            return m
    raise ValueError(f"{type(model).__name__}: no final norm found (looked for norm, final_layernorm, ln_f)")


def residual_streams(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Residual streams [layer −1, 0, …, n−1], each (batch, seq, d), from one forward pass.

    ``output_hidden_states=True`` gives n + 1 states: the embedding output and the output of
    decoder layers 0 … n−2 unchanged, but its *last* entry is the last layer's output **after**
    the final norm (HF applies ``model.norm`` before returning it). The raw residual stream
    after layer n−1 is taken instead with a forward pre-hook on the final norm, so that every
    layer, the last included, is the un-normalised stream and the logit lens applies the norm
    exactly once.
    """
    norm = final_norm(model)
    captured: list[torch.Tensor] = []
    handle = norm.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    hs = list(out.hidden_states)
    if not captured:
        raise ValueError(f"{type(model).__name__}: the final norm was not called; cannot read the last residual stream")
    hs[-1] = captured[-1]
    return hs


# ---------------------------------------------------------------- batches


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids (same for both models), a mask, and which rows are plain-text prompts."""

    ids: torch.Tensor
    mask: torch.Tensor
    plain: tuple[bool, ...]


def make_batches(rows: Sequence[list[int]], plain: Sequence[bool], pad_id: int, batch_tokens: int = 8192) -> list[TokenBatch]:
    """Group token rows (sorted by length, so little padding) into batches of about ``batch_tokens`` tokens.

    Right padding keeps position ids equal to the unpadded ones, so each prompt is computed as
    if alone (causal attention never looks at the pads after it).
    """
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * len(rows[i]) > batch_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    batches = []
    for idx in out:
        width = max(len(rows[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for j, i in enumerate(idx):
            ids[j, :len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
            mask[j, :len(rows[i])] = 1
        batches.append(TokenBatch(ids, mask, tuple(bool(plain[i]) for i in idx)))
    return batches


# ---------------------------------------------------------------- the two passes


@dataclass
class Recorded:
    """What the first model leaves behind: per batch, per layer, its residual stream at the real tokens."""

    streams: list[list[torch.Tensor]]
    head: Head


def record_pass(model: Any, batches: Sequence[TokenBatch], vocab: int | None = None,
                store_dtype: torch.dtype | None = None) -> Recorded:
    """Run ``model`` over every batch and keep its residual streams (real tokens only, on CPU) and its head.

    Memory: tokens × (layers + 1) × d values (``store_dtype``, default the model's dtype); the
    logits are never kept.
    """
    dev = next(model.parameters()).device
    streams = []
    for b in batches:
        hs = residual_streams(model, b.ids.to(dev), b.mask.to(dev))
        keep = b.mask.bool().to(dev)
        streams.append([h[keep].to("cpu", dtype=store_dtype or h.dtype) for h in hs])
    return Recorded(streams, Head.of(model, vocab))


@dataclass
class LayerSums:
    """Per-layer accumulators of one transition: CKA sums, Σ relative difference, Σ KL, token count, ADL sum."""

    cka: CKAStats = field(default_factory=CKAStats)
    rel_sum: float = 0.0
    kl_sum: float = 0.0
    tokens: int = 0
    adl_sum: torch.Tensor | None = None
    adl_count: int = 0

    def row(self) -> dict:
        n = max(self.tokens, 1)
        return {"cka": self.cka.value(), "act_rel_diff": self.rel_sum / n, "logit_lens_kl": self.kl_sum / n,
                "tokens": self.tokens}


def compare_pass(model_a: Any, recorded_b: Recorded, batches: Sequence[TokenBatch], adl_k: int = 5,
                 vocab: int | None = None) -> list[LayerSums]:
    """Run model A over the batches ``recorded_b`` was recorded on; accumulate every layer's comparison.

    B ran first and left its streams, so A's streams are X and B's are Y; the logit lens is
    KL(p_A ‖ p_B), each model read through its own final norm and unembedding. ADL sums
    h_B − h_A over the first ``adl_k`` positions of the plain-text rows.
    """
    dev = next(model_a.parameters()).device
    head_a = Head.of(model_a, vocab, copy_modules=False)
    head_b = recorded_b.head
    head_a.vocab = head_b.vocab = min(head_a.vocab, head_b.vocab)
    layers: list[LayerSums] | None = None
    for b, stored in zip(batches, recorded_b.streams):
        hs = residual_streams(model_a, b.ids.to(dev), b.mask.to(dev))
        keep = b.mask.bool()
        if layers is None:
            layers = [LayerSums() for _ in hs]
        # first-k positions of plain rows, flattened in the same order as h[keep]
        pos = torch.arange(b.ids.shape[1])[None, :].expand_as(keep)
        plain = torch.tensor(b.plain)[:, None].expand_as(keep)
        adl_sel = ((pos < adl_k) & plain)[keep]
        with torch.inference_mode():
            for L, (h, hb) in enumerate(zip(hs, stored)):
                ha = h[keep.to(dev)]
                hb = hb.to(dev)
                s = layers[L]
                s.cka.update(ha, hb)
                s.rel_sum += float(rel_diff(ha, hb).double().sum())
                s.kl_sum += float(_kl_chunked(head_a, head_b, ha, hb).double().sum())
                s.tokens += ha.shape[0]
                if adl_sel.any():
                    d = (hb.float() - ha.float())[adl_sel.to(dev)].double().sum(0)
                    s.adl_sum = d if s.adl_sum is None else s.adl_sum + d
                    s.adl_count += int(adl_sel.sum())
    return layers or []


def _kl_chunked(head_a: Head, head_b: Head, ha: torch.Tensor, hb: torch.Tensor, rows: int = 1024) -> torch.Tensor:
    """KL(p_A ‖ p_B) per token, a few rows at a time (tokens × vocab logits never exist whole)."""
    out = []
    for i in range(0, ha.shape[0], rows):
        lpa = head_a.logprobs(ha[i:i + rows])
        lpb = head_b.logprobs(hb[i:i + rows]).to(lpa.device)
        out.append(kl_rows(lpa, lpb).cpu())
    return torch.cat(out) if out else torch.zeros(0)


# ---------------------------------------------------------------- activation difference lens


def adl_tokens(direction: torch.Tensor, head: Head, top: int = 10) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Top promoted and suppressed token ids (with logits) of a mean activation difference.

    Minder et al. (2025) read h_B − h_A, averaged over the first few positions of unrelated
    text, through the logit lens. We read it through **B's** final norm and unembedding: the
    question is what the fine-tuned model's own readout makes of the shift it acquired. The
    norm is applied to the difference itself (RMSNorm rescales it to unit RMS and applies B's
    per-dimension gain), so the ranking depends on the direction, not on its length.
    """
    with torch.no_grad():
        logits = head.read(direction.float())
    k = min(top, logits.numel())
    hi = torch.topk(logits, k)
    lo = torch.topk(-logits, k)
    return ([(int(i), float(v)) for v, i in zip(hi.values, hi.indices)],
            [(int(i), float(-v)) for v, i in zip(lo.values, lo.indices)])


def finite(x: float) -> float | None:
    return x if isinstance(x, float) and math.isfinite(x) else None
