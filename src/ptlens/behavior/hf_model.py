"""One transformers causal LM in memory (:class:`HFModel`): loading a checkpoint, seeded sampling, and the
teacher-forced scoring pass (the full-vocabulary distribution at every response token, so exact entropies and
cross_kl, :class:`TokenScores`). Over 400 lines because :class:`HFModel` is one class: its sampling and scoring
share the loaded model, the placement and the prompt-cache passes."""

from __future__ import annotations

import copy
import functools
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ptlens.behavior.nucleus import KL_SMOOTHING, Nucleus, nucleus_kl, nucleus_of
from ptlens.behavior.sampling import Generation, RowSampler, SamplingSettings, finish_generation
from ptlens.errors import PtlensError


@dataclass(frozen=True)
class TokenScores:
    """Teacher-forced totals over one response's tokens: log-prob and entropy at temperature 1 (cross_ppl,
    token_entropy); with a :class:`KLReference`, the sampling-distribution KL from the sampler to this model."""

    logprob_sum: float
    entropy_sum: float
    tokens: int
    kl_sum: float | None = None
    """Σ_t KL(p̃_sampler(·|prefix_t) ‖ q_this(·|prefix_t)) along the response (see :func:`token_kl`)."""
    kl_inf_tokens: int | None = None
    """Positions where the unsmoothed KL is infinite: the sampler's nucleus holds a token outside this model's."""
    nucleus: "Nucleus | None" = None
    """This model's own sampling distribution along the response (only when asked for: ``HFModel.score(keep=…)``)."""
    unscorable: int = 0
    """Tokens of the prompt + response this model cannot embed or predict (ids beyond its vocabulary rows: a later
    stage added them). Such a response is left out of this model's scores: log-prob, entropy, tokens 0, no KL."""



NUCLEUS_CACHE_WIDTH = 256
"""Responses whose nucleus is wider than this at some position are not cached (top-p 1 keeps the whole
vocabulary); their cross_kl reloads the sampler instead. At temperature 0.6, top-p 0.95 nuclei are a few tokens."""



@dataclass(frozen=True)
class KLReference:
    """The model that sampled the responses being scored, its own prompt ids (one per pair) and the sampling
    settings, so that scoring also measures cross_kl[sampler‖scorer] on the distributions sampling used.

    ``nuclei`` (one per pair), when given, are the sampler's distributions kept from its own scoring pass:
    then ``model`` and ``prompts`` are not used and may be None / empty.
    """

    model: "HFModel | None"
    prompts: Sequence[list[int]]
    settings: SamplingSettings
    smoothing: float = KL_SMOOTHING
    nuclei: Sequence[Nucleus] | None = None

    def subset(self, idx: Sequence[int]) -> "KLReference":
        return KLReference(self.model, [self.prompts[j] for j in idx] if self.nuclei is None else [],
                           self.settings, self.smoothing, None if self.nuclei is None else [self.nuclei[j] for j in idx])



def check_weights(path: Path, name: str, allow_pickle: bool) -> None:
    """Safetensors only, unless the user allowed pickle checkpoints (which transformers loads with weights_only)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise PtlensError(f"model {name} ({path}): no config.json")
    if any(path.glob("*.safetensors")):
        return
    if any(path.glob("*.bin")):
        if not allow_pickle:
            raise PtlensError(f"model {name} ({path}): only pickle weights (*.bin); pass --allow-pickle to load them "
                              "(with weights_only=True)")
        return
    raise PtlensError(f"model {name} ({path}): no weights (*.safetensors)")



def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PtlensError(f"--device {device}: no CUDA GPU is available")
    return device



SPLIT_COST = 256
"""The fixed cost of one more forward pass in padded response tokens (see :func:`response_groups`)."""



def response_groups(lengths: Sequence[int], split_cost: float = SPLIT_COST) -> list[list[int]]:
    """Split rows into forward passes by response length, to cut padding: every row of a pass is padded to its
    longest response, so a batch of 16-token and 90-token responses costs 90 per row.

    Rows sorted by length are cut into runs minimising Σ (``split_cost`` + rows × longest), exactly (dynamic
    programming over the cut points); a large ``split_cost`` keeps one pass. Returns the runs as row indices,
    shortest responses first.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    # a cut between two rows of equal length only adds a pass: cut between distinct lengths only, O(distinct²)
    ends = [j for j in range(1, len(order) + 1) if j == len(order) or lengths[order[j]] != lengths[order[j - 1]]]
    best = {0: 0.0}  # best[j]: the cheapest split of the j shortest rows, j a run end
    cut = {0: 0}
    for j in ends:
        best[j] = float("inf")
        for i in [0, *ends]:
            if i >= j:
                break
            c = best[i] + split_cost + (j - i) * lengths[order[j - 1]]
            if c < best[j]:
                best[j], cut[j] = c, i
    runs, j = [], len(order)
    while j > 0:
        runs.append(order[cut[j]:j])
        j = cut[j]
    return runs[::-1]



def load_placement(device: str, gpus: int) -> dict:
    """``from_pretrained`` keywords that place a model: sharded over every visible GPU (``device_map="auto"``,
    layers split by free memory) for ``--device cuda`` with more than one GPU; else none (moved to ``device``)."""
    return {"device_map": "auto"} if device == "cuda" and gpus > 1 else {}



class HFModel:
    """One transformers causal LM in memory, for sampling and teacher-forced scoring; ``close`` frees it."""

    def __init__(self, path: Path, tokenizer: Any, device: str = "auto", dtype: str = "auto",
                 score_token_budget: int | None = None, allow_pickle: bool = False):
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.device = pick_device(device)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        check_weights(path, Path(path).name, allow_pickle)
        shard = load_placement(self.device, torch.cuda.device_count() if self.device == "cuda" else 0)
        try:
            self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype,
                                                              use_safetensors=None if allow_pickle else True, **shard)
        except OSError as e:
            raise PtlensError(f"{path}: cannot load the model: {str(e).splitlines()[0]}") from None
        if shard:  # inputs go where the embeddings are; logits (and the sampler's draws) come out on the last device
            self.device = str(self.model.get_input_embeddings().weight.device)
        else:
            self.model.to(self.device)
        self.model.eval()
        self.out_device = str(self.model.get_output_embeddings().weight.device)
        if self.device == "cpu":  # small matrices: one thread beats several waking up for every op
            from ptlens.threads import for_work

            for_work(max(p.numel() for p in self.model.parameters()))
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = {int(e) for e in eos} | {int(tokenizer.eos_token_id)}
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.embed_rows = int(self.model.get_input_embeddings().weight.shape[0])
        self.score_token_budget = score_token_budget or (1 << 28 if self.device.startswith("cuda") else 1 << 24)
        self._shares_prompts = not shard  # a sharded model's cache lies on several devices: full passes
        self.split_cost = SPLIT_COST
        """False once a batch found the model's cache unfit for :meth:`_shared_prompt_logits`."""

    def generate(self, rows: Sequence[list[int]], stop: Sequence[str], settings: SamplingSettings,
                 seed: int | Sequence[int], streamer: Any = None) -> list[Generation]:
        """Sample one response per row of prompt ids (repeat a prompt for several samples), left-padded in one batch.

        ``seed``: one seed per row makes each row's sample depend on its own seed only (a per-row
        generator draws its tokens: :class:`RowSampler`), so a sample is the same whatever batch it is
        generated in; one int seeds torch's global generator for the whole batch (the draw then depends
        on the batch). ``streamer`` (a transformers streamer, one row only) receives tokens as they are sampled.
        """
        import torch
        from transformers import LogitsProcessorList

        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        max_new = settings.max_new_tokens
        context = getattr(self.model.config, "max_position_embeddings", None)
        if context and width + max_new > context:
            max_new = max(1, context - width)  # past its context the model is out of distribution: a truncation
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new, pad_token_id=self.pad_id,
                                      eos_token_id=sorted(self.eos_ids))
        per_row = not isinstance(seed, int)
        if per_row and len(seed) != len(rows):
            raise ValueError("one seed per row")
        if settings.temperature > 0 and not per_row:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if settings.temperature > 0:  # greedy over the one-hot scores of our own per-row draw
                kwargs.update(logits_processor=LogitsProcessorList(
                    [RowSampler(seed, settings.temperature, settings.top_p, self.out_device)]))
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        if streamer is not None:
            kwargs.update(streamer=streamer)
        if not per_row:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        new = out[:, width:].tolist()
        pad = self.pad_id if self.pad_id not in self.eos_ids else None
        return [finish_generation(self.tokenizer, row, stop, max_new, self.eos_ids, pad) for row in new]

    def score(self, pairs: Sequence[tuple[list[int], list[int]]], kl: KLReference | None = None,
              keep: SamplingSettings | None = None, share_prompts: bool = True) -> list[TokenScores]:
        """Teacher-forced log-probs and full-vocabulary entropies (temperature 1) of each response after its prompt.

        With ``kl`` (the model that sampled the responses, with its own prompts, or its kept nuclei) each score
        also holds the per-token KL from the sampler's sampling distribution to this model's (:func:`token_kl`).
        With ``keep`` (this model's sampling settings, when it scores its own samples) each score also holds the
        response's :class:`Nucleus`, or None where it is wider than :data:`NUCLEUS_CACHE_WIDTH`.

        ``share_prompts`` (default): the responses of one prompt are batched together and the prompt runs once
        per batch (:meth:`_shared_prompt_logits`; also for the reloaded sampler's own prompts); False runs every
        prompt + response in full, the reference the shared path is tested equal to. Same results either way,
        to float rounding. Batches are bounded by ``score_token_budget`` as rows × (prompt + response) tokens ×
        vocabulary, whichever path runs (the full path's logits; the shared path's are smaller).
        """
        if kl is not None and len(kl.nuclei if kl.nuclei is not None else kl.prompts) != len(pairs):
            raise ValueError("KLReference needs one sampler prompt (or nucleus) per pair")
        limit = min(self.embed_rows, self.vocab_size)
        outside = [sum(t >= limit for t in p) + sum(t >= limit for t in r) for p, r in pairs]
        if any(outside):  # ids a later stage added (Tülu 3 SFT's new rows): this model cannot run them
            good = [i for i, n in enumerate(outside) if not n]
            done = iter(self.score([pairs[i] for i in good], None if kl is None else kl.subset(good), keep,
                                   share_prompts) if good else [])
            return [next(done) if not n else TokenScores(0.0, 0.0, 0, unscorable=n) for n in outside]
        results: list[TokenScores | None] = [None] * len(pairs)
        if share_prompts:  # one prompt's pairs together, shortest prompts first, shortest responses first within one
            first: dict[tuple[int, ...], int] = {}
            for i, (p, _) in enumerate(pairs):
                first.setdefault(tuple(p), i)
            order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), first[tuple(pairs[i][0])],
                                                             len(pairs[i][1])))
        else:
            order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        batches: list[list[int]] = [[]]
        per_token = self.vocab_size * (3 if kl is not None else 1)  # the sampler's logits and the KL's temporaries
        wide_p = wide_r = 0
        for i in order:
            p, r = pairs[i]
            wp, wr = max(wide_p, len(p)), max(wide_r, len(r))
            if batches[-1] and (len(batches[-1]) + 1) * (wp + wr) * per_token > self.score_token_budget:
                batches.append([])
                wp, wr = len(p), len(r)
            batches[-1].append(i)
            wide_p, wide_r = wp, wr
        for batch in batches:
            if batch:
                ref = None if kl is None else kl.subset(batch)
                for j, s in zip(batch, self._score_batch([pairs[j] for j in batch], ref, keep, share_prompts)):
                    results[j] = s
        return results  # type: ignore[return-value]

    def _logits(self, seqs: Sequence[list[int]]) -> Any:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
        return self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits

    def _response_logits(self, pairs: Sequence[tuple[list[int], list[int]]], share_prompts: bool = True) -> list[Any]:
        """Per pair, the logits that predict its response: row t is the model's next-token logits after the prompt
        and ``response[:t]``, shape (len(response), vocab) — views into one batch tensor. The shared-prompt path
        when it applies (:meth:`_shared_prompt_logits`), else every prompt + response in full."""
        if share_prompts:
            out = self._shared_prompt_logits(pairs)
            if out is not None:
                return out
        logits = self._logits([p + r for p, r in pairs])
        return [logits[i, len(p) - 1:len(p) + len(r) - 1] for i, (p, r) in enumerate(pairs)]

    def _shared_prompt_logits(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[Any] | None:
        """:meth:`_response_logits` with each distinct prompt run once; None where that cannot apply or gains nothing.

        Each distinct prompt but its last token runs once through the base model (no unembedding), right-padded,
        into a key/value cache (a transformers ``DynamicCache``), whose rows are then repeated to the pairs. Each
        pair's row is then the prompt's last token followed by ``response[:-1]``, with explicit positions and a
        2-D mask over [prompt slots | response slots], so its logits are exactly the full pass's logits over the
        response (the first predicts the response's first token), up to float rounding. The rows run in one or
        more passes by response length (:func:`response_groups`: less padding), each on its own copy of the cache.

        None (the caller runs every pair in full) when no prompt repeats in the batch (one prompt forward more,
        nothing saved), when no response has a token, when a prompt has under 2 tokens, and when the model's cache
        is not a plain full-attention ``DynamicCache`` (sliding-window, hybrid, recurrent or static caches drop or
        keep keys differently: the repeated rows and the 2-D mask would not be the full pass). The last is learnt
        on the first batch and remembered, so such a model pays the prompt forward once.
        """
        import torch

        heads: dict[tuple[int, ...], int] = {}
        for p, _ in pairs:
            heads.setdefault(tuple(p), len(heads))
        width_r = max(len(r) for _, r in pairs)
        if (not self._shares_prompts or len(heads) == len(pairs) or width_r == 0
                or min(len(p) for p in heads) < 2):
            return None
        dev = self.device
        width_p = max(len(p) for p in heads) - 1
        ids = torch.full((len(heads), width_p), self.pad_id, dtype=torch.long)
        pmask = torch.zeros((len(heads), width_p), dtype=torch.long)
        for p, k in heads.items():
            ids[k, :len(p) - 1] = torch.tensor(p[:-1], dtype=torch.long)
            pmask[k, :len(p) - 1] = 1
        cache = self._new_cache()
        self.model.base_model(input_ids=ids.to(dev), attention_mask=pmask.to(dev), use_cache=True,
                              **{self._cache_kwarg: cache})
        if not self._plain_cache(cache):
            self._shares_prompts = False
            return None
        out: list[Any] = [None] * len(pairs)
        groups = response_groups([len(r) for _, r in pairs], self.split_cost)
        for g, rows in enumerate(groups):
            rows = [i for i in rows if pairs[i][1]]
            if not rows:
                continue
            here = cache if g == len(groups) - 1 else copy.deepcopy(cache)  # the forward appends to its cache
            here.batch_select_indices(torch.tensor([heads[tuple(pairs[i][0])] for i in rows], device=dev))
            width_r = max(len(pairs[i][1]) for i in rows)
            ids = torch.full((len(rows), width_r), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width_p + width_r), dtype=torch.long)
            pos = torch.arange(width_r, dtype=torch.long).repeat(len(rows), 1)
            for k, i in enumerate(rows):
                p, r = pairs[i]
                mask[k, :len(p) - 1] = 1
                pos[k] += len(p) - 1
                ids[k, :len(r)] = torch.tensor([p[-1], *r[:-1]], dtype=torch.long)
                mask[k, width_p:width_p + len(r)] = 1
            logits = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                                use_cache=True, **{self._cache_kwarg: here}).logits
            for k, i in enumerate(rows):
                out[i] = logits[k, :len(pairs[i][1])]
        empty = None
        for i, (_, r) in enumerate(pairs):
            if not r:
                if empty is None:
                    empty = torch.zeros((0, self.vocab_size), dtype=self.model.dtype, device=dev)
                out[i] = empty
        return out

    def _new_cache(self) -> Any:
        """An empty ``DynamicCache`` for the model, passed in explicitly: transformers 4.x returns the cache it makes
        itself as legacy tuples; 5.x lays its layers out from the config (sliding-window ones included)."""
        import inspect

        from transformers import DynamicCache

        if "config" in inspect.signature(DynamicCache.__init__).parameters:
            return DynamicCache(config=self.model.config)
        return DynamicCache()

    @functools.cached_property
    def _cache_kwarg(self) -> str:
        """What the model's forward calls its cache argument (``past_key_values`` before transformers 5.x's ``cache``)."""
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _plain_cache(self, cache: Any) -> bool:
        """Whether ``cache`` is a full-attention ``DynamicCache`` whose rows can be repeated (every layer keeps every key)."""
        from transformers import DynamicCache

        if type(cache) is not DynamicCache or not hasattr(cache, "batch_select_indices"):
            return False
        layers = getattr(cache, "layers", None)
        if layers is not None:  # transformers ≥ 4.56: one cache layer object per layer
            from transformers.cache_utils import DynamicLayer

            return all(type(layer) is DynamicLayer for layer in layers)
        return not getattr(self.model.config.get_text_config(), "sliding_window", None)

    def _score_batch(self, pairs: Sequence[tuple[list[int], list[int]]], kl: KLReference | None = None,
                     keep: SamplingSettings | None = None, share_prompts: bool = True) -> list[TokenScores]:
        import torch

        with torch.inference_mode():
            logits = self._response_logits(pairs, share_prompts)
            ref_logits = None
            if kl is not None and kl.nuclei is None:
                ref_logits = kl.model._response_logits([(q, r) for q, (_, r) in zip(kl.prompts, pairs)], share_prompts)
            out = []
            for i, (p, r) in enumerate(pairs):
                if not r:
                    empty = None if keep is None else Nucleus(torch.zeros(0, dtype=torch.long), torch.zeros(0),
                                                               torch.zeros(1, dtype=torch.long))
                    out.append(TokenScores(0.0, 0.0, 0, 0.0 if kl is not None else None, 0 if kl is not None else None,
                                           empty))
                    continue
                mine = logits[i]
                lg = mine.float()
                logp = torch.log_softmax(lg, dim=-1)
                target = torch.tensor(r, device=lg.device)
                lp = logp.gather(1, target[:, None]).sum()
                ent = -(logp.exp() * logp).sum(-1).sum()
                kl_sum = kl_inf = nucleus = None
                if kl is not None:
                    if kl.nuclei is not None:
                        ref = kl.nuclei[i]
                    else:
                        ref = nucleus_of(ref_logits[i].to(lg.device), kl.settings.temperature, kl.settings.top_p)
                    per_token, infinite = nucleus_kl(ref, mine, kl.settings.temperature, kl.settings.top_p,
                                                     kl.smoothing)
                    kl_sum, kl_inf = float(per_token.sum()), int(infinite.sum())
                if keep is not None:
                    nucleus = nucleus_of(mine, keep.temperature, keep.top_p)
                    nucleus = nucleus if nucleus.width <= NUCLEUS_CACHE_WIDTH else None
                out.append(TokenScores(float(lp), float(ent), len(r), kl_sum, kl_inf, nucleus))
        return out

    def close(self) -> None:
        import torch

        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> "HFModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
