"""What ``ptlens behavior`` is asked to do: :class:`BehaviorConfig`, its checks, and the engine-specific keywords."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ptlens.behavior.prompts import AUTO_INSTRUCTION
from ptlens.behavior.sampling import MAX_NEW_TOKENS, SamplingSettings
from ptlens.errors import PtlensError

N_SAMPLES = 16
"""Samples per problem and model by default."""


@dataclass
class BehaviorConfig:
    """Everything ``ptlens behavior`` needs besides the lineage and the output folder."""

    problems: str = "builtin"
    limit: int | None = None
    seed: int = 0
    n_samples: int = N_SAMPLES
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = MAX_NEW_TOKENS
    engine: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    scoring: str = "auto"
    """"auto": through the sampling engine when it scores (vLLM: cross-perplexity and Monte-Carlo KL from its
    log-probs, no transformers model loaded), else transformers; "engine" insists; "hf": transformers (exact KL)."""
    batch_size: int = 64
    """Samples per engine call (prompts × samples); the unit that a kill can lose."""
    engine_options: dict = field(default_factory=dict)
    """Engine-specific keywords (:class:`EngineOptions` ``extra``), e.g. ``{"engine_kwargs": {"enforce_eager": True}}``
    for vLLM, ``{"processor": {"concurrency": 4}}`` for ray-vllm."""
    shard_index: int = 0
    shard_count: int = 1
    """With shard_count > 1 this process only samples its share of the batches (index % count) into the shared
    journal and returns; a later run without shards scores, merges and writes results."""
    instruction: str | None = AUTO_INSTRUCTION
    """Appended to each question; "auto": what the checkpoint declares, else DEFAULT_INSTRUCTION; None/"": none."""
    overwrite: bool = False
    allow_pickle: bool = False
    n_boot: int = 1000
    ks: list[int] | None = None
    figures: bool = True

    def validate(self) -> None:
        if self.n_samples < 1:
            raise PtlensError(f"--n-samples must be at least 1, got {self.n_samples}")
        if self.max_new_tokens < 1:
            raise PtlensError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}: a model cannot answer in 0 tokens")
        if self.temperature < 0:
            raise PtlensError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise PtlensError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.scoring not in ("auto", "engine", "hf"):
            raise PtlensError(f"scoring must be auto, engine or hf, got {self.scoring!r}")
        if self.batch_size < 1:
            raise PtlensError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0 <= self.shard_index < self.shard_count:
            raise PtlensError(f"shard {self.shard_index} of {self.shard_count}: need 0 <= index < count")

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.temperature, self.top_p, self.max_new_tokens)


ENGINE_OPTIONS_ENV = "PTLENS_ENGINE_OPTIONS"


def engine_extra(config: BehaviorConfig) -> dict:
    """Engine-specific keywords: JSON in ``PTLENS_ENGINE_OPTIONS`` (how the CLI passes them), then
    ``config.engine_options`` on top (one level deep: ``engine_kwargs`` and ``processor`` dicts merge)."""
    raw = os.environ.get(ENGINE_OPTIONS_ENV, "").strip()
    try:
        env = json.loads(raw) if raw else {}
    except ValueError:
        raise PtlensError(f"{ENGINE_OPTIONS_ENV}: not JSON: {raw[:80]}") from None
    if not isinstance(env, dict):
        raise PtlensError(f"{ENGINE_OPTIONS_ENV}: expected a JSON object")
    out = dict(env)
    for k, v in config.engine_options.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out

