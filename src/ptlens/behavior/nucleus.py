"""The sampling distribution and the KL maths on it: a model's exact sampling distribution (temperature, then
top-p), its ε-smoothed form, the sparse :class:`Nucleus` kept per response, the per-token KL from a sampler to a
scorer (:func:`token_kl`), and the Monte-Carlo scores from an engine's top-K log-probs
(:func:`sampled_token_scores`, also run in the vLLM worker: torch only, imported lazily).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


KL_SMOOTHING = 1e-3
"""ε of :func:`token_kl`: where the sampler's nucleus reaches outside the scorer's, the share of the scorer's
untruncated tempered distribution mixed into its nucleus."""



@dataclass(frozen=True)
class Nucleus:
    """The sampler's sampling distribution along one response, kept sparse: at position t, the token ids with
    p̃ > 0 (``ids[offsets[t]:offsets[t+1]]``, ascending) and their log p̃.

    Kept from the sampler's own scoring pass so that cross_kl needs only the scorer's logits: the sampler is
    neither reloaded nor rerun. Exact, not an approximation: every token with p̃ > 0 is held.
    """

    ids: Any
    logp: Any
    offsets: Any

    @property
    def positions(self) -> int:
        return int(self.offsets.shape[0]) - 1

    @property
    def width(self) -> int:
        """The widest position's nucleus (the cache skips responses wider than :data:`NUCLEUS_CACHE_WIDTH`)."""
        return int((self.offsets[1:] - self.offsets[:-1]).max()) if self.positions else 0



def sampling_logprobs(logits: Any, temperature: float, top_p: float) -> Any:
    """log p̃ of the distribution ``generate`` samples from: transformers' own TemperatureLogitsWarper then
    TopPLogitsWarper (the processors HFModel.generate enables, top_k off), −inf outside the nucleus.

    Temperature 0 (greedy) is a point mass on the argmax. ``logits``: (positions, vocab), float.
    """
    import torch
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    if temperature <= 0:
        out = torch.full_like(logits, float("-inf"))
        return out.scatter(-1, logits.argmax(-1, keepdim=True), 0.0)
    scores = logits
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.log_softmax(scores, dim=-1)



def smoothed_logprobs(logits: Any, temperature: float, top_p: float, smoothing: float = KL_SMOOTHING) -> Any:
    """log q = log((1 − ε)·p̃ + ε·p_T): the sampling distribution p̃ mixed with the same model's tempered but
    untruncated distribution p_T (temperature 1 when greedy), so every token keeps some mass and a KL to q is
    finite. With top-p 1 and temperature > 0, p̃ = p_T and q = p̃ exactly."""
    import math

    import torch

    exact = sampling_logprobs(logits, temperature, top_p)
    if smoothing <= 0:
        return exact
    full = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
    return torch.logaddexp(exact + math.log1p(-smoothing), full + math.log(smoothing))



def nucleus_of(logits: Any, temperature: float, top_p: float) -> Nucleus:
    """The sparse :func:`sampling_logprobs` of one response's positions (``logits``: (positions, vocab))."""
    import torch

    wide = torch.promote_types(logits.dtype, torch.float32)
    lp = sampling_logprobs(logits.to(wide), temperature, top_p)
    rows, ids = torch.nonzero(lp.exp() > 0, as_tuple=True)
    counts = torch.bincount(rows, minlength=lp.shape[0])
    offsets = torch.zeros(lp.shape[0] + 1, dtype=torch.long, device=lp.device)
    offsets[1:] = counts.cumsum(0)
    return Nucleus(ids, lp[rows, ids], offsets)



def nucleus_kl(nucleus: Nucleus, logits_q: Any, temperature: float, top_p: float,
               smoothing: float = KL_SMOOTHING) -> tuple[Any, Any]:
    """Per-position KL(p̃_P ‖ q_Q) from P's sparse nucleus and Q's logits, and where KL(p̃_P ‖ p̃_Q) is infinite.

    The sum runs over P's nucleus only, which is exact: outside it p̃_P = 0. See :func:`token_kl`.
    """
    import torch

    if nucleus.positions != logits_q.shape[0]:
        raise ValueError(f"nucleus of {nucleus.positions} positions against {logits_q.shape[0]} scored positions")
    wide = torch.promote_types(torch.promote_types(nucleus.logp.dtype, logits_q.dtype), torch.float32)
    dev = logits_q.device
    ids, lp = nucleus.ids.to(dev), nucleus.logp.to(dev, wide)
    logits_q = logits_q.to(wide)
    need = int(ids.max()) + 1 if ids.numel() else 0
    if need > logits_q.shape[-1]:  # vocabularies of different sizes: the missing rows have probability 0
        logits_q = torch.nn.functional.pad(logits_q, (0, need - logits_q.shape[-1]), value=float("-inf"))
    rows = torch.repeat_interleave(torch.arange(nucleus.positions, device=dev), (nucleus.offsets[1:] - nucleus.offsets[:-1]).to(dev))
    lq = sampling_logprobs(logits_q, temperature, top_p)[rows, ids]
    infinite = torch.zeros(nucleus.positions, dtype=torch.bool, device=dev)
    infinite[rows[torch.isneginf(lq)]] = True
    if bool(infinite.any()):
        smooth = smoothed_logprobs(logits_q, temperature, top_p, smoothing)[rows, ids]
        lq = torch.where(infinite[rows], smooth, lq)
    kl = torch.zeros(nucleus.positions, dtype=wide, device=dev).index_add_(0, rows, lp.exp() * (lp - lq))
    return kl.clamp_min(0.0), infinite



def token_kl(logits_p: Any, logits_q: Any, temperature: float, top_p: float,
             smoothing: float = KL_SMOOTHING) -> tuple[Any, Any]:
    """Per-position KL(p̃_P ‖ q_Q) over the full vocabulary, and where KL(p̃_P ‖ p̃_Q) itself is infinite.

    P is the sampler (its exact sampling distribution p̃_P), Q the scorer: q_Q = p̃_Q wherever P's nucleus lies
    inside Q's (the KL is then the exact one, and 0 for a model with itself); at the other positions, where the
    exact KL is +∞, q_Q is the ε-smoothed :func:`smoothed_logprobs`, and the position is flagged.
    Non-negative by construction: a KL between two proper distributions (clamped at 0 against rounding).
    Summed along a response sampled from P it is an unbiased estimate of the sequence KL of P̃ to Q (chain rule).
    Vocabularies of different sizes are aligned by giving the missing rows zero probability.
    """
    return nucleus_kl(nucleus_of(logits_p, temperature, top_p), logits_q, temperature, top_p, smoothing)



@dataclass(frozen=True)
class SampledScores:
    """One response scored from the log-probabilities an engine gives of its tokens (vLLM ``prompt_logprobs``):
    what the Monte-Carlo KL estimator and cross-perplexity need, without the full next-token distributions.

    ``logprob_sum``: Σ log p(y_t) at temperature 1 (exact, as :class:`TokenScores`). ``sampling_logprob_sum``:
    Σ log q(y_t) of the *sampling* distribution (temperature, then top-p; :func:`sampling_logprobs`), the
    ε-smoothed :func:`smoothed_logprobs` at the ``outside_tokens`` positions where y_t lies outside this model's
    nucleus. ``entropy_sum``: Σ of the temperature-1 entropy over the candidate tokens the engine returned
    (exact when ``complete``: they were the whole vocabulary; a lower bound otherwise)."""

    logprob_sum: float
    sampling_logprob_sum: float
    entropy_sum: float
    tokens: int
    outside_tokens: int
    complete: bool



def sampled_token_scores(logprobs: Any, target: Any, temperature: float, top_p: float, complete: bool,
                         smoothing: float = KL_SMOOTHING) -> SampledScores:
    """:class:`SampledScores` of one response from an engine's per-position candidates.

    ``logprobs``: (positions, K) temperature-1 log-probs of K candidate tokens per position (the engine's top-K
    and the sampled token; −inf pads), ``target``: (positions,) column of the sampled token. Log-softmax is
    shift-invariant, so the candidates' log-probs transform like logits: with the whole vocabulary
    (``complete``) the sampling distribution is exact; with a top-K it is the one renormalised over the top-K
    (exact when the nucleus and the tempered mass lie inside it, which is what a top-K large beside the nucleus
    gives).
    """
    import torch

    lp = torch.as_tensor(logprobs, dtype=torch.float64)
    tgt = torch.as_tensor(target, dtype=torch.long)
    n = int(lp.shape[0])
    if n == 0:
        return SampledScores(0.0, 0.0, 0.0, 0, 0, complete)
    rows = torch.arange(n)
    exact = sampling_logprobs(lp, temperature, top_p)[rows, tgt]
    outside = torch.isneginf(exact)
    if bool(outside.any()):
        smooth = smoothed_logprobs(lp, temperature, top_p, smoothing)[rows, tgt]
        exact = torch.where(outside, smooth, exact)
    finite = torch.where(torch.isfinite(lp), lp, torch.zeros_like(lp))
    entropy = -(lp.exp() * finite).sum()
    return SampledScores(float(lp[rows, tgt].sum()), float(exact.sum()), float(entropy), n, int(outside.sum()),
                         complete)
