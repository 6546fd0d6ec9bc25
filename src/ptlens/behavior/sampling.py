"""What one sample is: the sampling settings, per-sample seeds, the per-row seeded sampler transformers
``generate`` runs (:class:`RowSampler`), and where a generated row is cut into a :class:`Generation`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

from ptlens.behavior.nucleus import sampling_logprobs


MAX_NEW_TOKENS = 512
"""Longest response by default, in tokens (behaviour, quick, mechanism and the CLI read it from here)."""


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = MAX_NEW_TOKENS



@dataclass
class Generation:
    """One sampled response: the tokens the model produced (end token or stop string included) and its text."""

    token_ids: list[int]
    text: str
    finish: str
    """"eos" (end token), "stop" (a stop string) or "length" (hit max_new_tokens: truncated)."""



def derived_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)



def finish_generation(tokenizer: Any, ids: Sequence[int], stop: Sequence[str], max_new_tokens: int,
                      eos_ids: set[int], pad_id: int | None) -> Generation:
    """Cut one row of ``generate`` output where the model stopped; the text drops specials and the stop string."""
    out: list[int] = []
    finish = None
    for t in ids:
        t = int(t)
        if t in eos_ids:
            out.append(t)
            finish = "eos"
            break
        if pad_id is not None and t == pad_id:
            finish = "stop"
            break
        out.append(t)
    text = tokenizer.decode(out, skip_special_tokens=True)
    hits = [(text.find(s), s) for s in stop if s in text]
    if hits:
        cut, _ = min(hits)
        lo, hi = 1, len(out)  # shortest prefix whose text holds a stop string (containment is monotone)
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in tokenizer.decode(out[:mid], skip_special_tokens=True) for s in stop):
                hi = mid
            else:
                lo = mid + 1
        return Generation(token_ids=out[:lo], text=text[:cut], finish="stop")
    if finish is None:
        finish = "length" if len(out) >= max_new_tokens else "stop"
    return Generation(token_ids=out, text=text, finish=finish)



class RowSampler:
    """A logits processor that draws each row's next token from :func:`sampling_logprobs` (temperature, then
    top-p: the distribution transformers' sampler uses and cross_kl assumes) with that row's own generator,
    and returns one-hot scores, so that greedy decoding emits the draw.

    Row i's k-th token depends only on seed i and its own logits: the sample does not depend on which
    other rows share the batch, how many there are, or the order they come in.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: str = "cpu"):
        import torch

        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = sampling_logprobs(scores.float(), self.temperature, self.top_p).exp()
        out = torch.full_like(scores, float("-inf"))
        for i, g in enumerate(self.generators):
            out[i, torch.multinomial(probs[i], 1, generator=g)] = 0.0
        return out
