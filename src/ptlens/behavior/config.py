"""What ``ptlens behavior`` is asked to do: :class:`BehaviorConfig` (each option's default, help text and check on
its field: :mod:`ptlens.config_fields`), and the engine-specific keywords."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ptlens.behavior.problems import SEED_CHECK
from ptlens.behavior.prompts import AUTO_INSTRUCTION, DEFAULT_INSTRUCTION
from ptlens.behavior.sampling import MAX_NEW_TOKENS, SamplingSettings
from ptlens.config_fields import ALLOW_PICKLE, DEVICE, at_least, check_fields, rule, setting
from ptlens.errors import PtlensError

N_SAMPLES = 16
"""Samples per problem and model by default."""


def _known_engine(value: str, name: str) -> str | None:
    from ptlens.behavior.engines import engine_names

    names = engine_names()
    return None if value in names else f"{name} must be one of {', '.join(names)}, got {value!r}"


@dataclass
class BehaviorConfig:
    """Everything ``ptlens behavior`` needs besides the lineage and the output folder."""

    problems: str = setting("builtin", flag="--problems",
                            help="builtin, gsm8k, math500 or a .jsonl file with id/question/answer.")
    limit: int | None = setting(None, flag="--limit", help="Use the first N problems (builtin: default 60).",
                                check=at_least(1))
    seed: int = setting(0, flag="--seed", help="Seed for problems, sampling and bootstrap.", check=SEED_CHECK)
    n_samples: int = setting(N_SAMPLES, flag="--n-samples", help="Samples per problem and model.", check=at_least(1))
    temperature: float = setting(0.6, flag="--temperature", help="Sampling temperature.",
                                 check=rule(lambda v: v >= 0, "{name} must be >= 0, got {value}"))
    top_p: float = setting(0.95, flag="--top-p",
                           help="Nucleus sampling: the smallest set of tokens with this much probability.",
                           check=rule(lambda v: 0 < v <= 1, "{name} must be in (0, 1], got {value}"))
    max_new_tokens: int = setting(MAX_NEW_TOKENS, flag="--max-new-tokens", help="Token limit of each answer.",
                                  check=at_least(1, ": a model cannot answer in 0 tokens"))
    # the names written out: importing the registry here would load the engines for every reader of this module
    # (the report); tests/test_config_fields.py checks them against engine_names()
    engine: str = setting("auto", flag="--engine", check=_known_engine,
                          help="auto, hf, vllm, ray-vllm (auto: vLLM when found and a GPU is present).")
    device: str = DEVICE.field()
    dtype: str = "auto"
    scoring: str = setting("auto", help="How samples are scored: auto, engine or hf.", check=rule(
        lambda v: v in ("auto", "engine", "hf"), "{name} must be auto, engine or hf, got {value!r}"))
    """"auto": through the sampling engine when it scores (vLLM: cross-perplexity and Monte-Carlo KL from its
    log-probs, no transformers model loaded), else transformers; "engine" insists; "hf": transformers (exact KL)."""
    batch_size: int = setting(64, flag="--batch-size", help="Sequences per generate call.", check=at_least(1))
    """Samples per engine call (prompts × samples); the unit that a kill can lose."""
    engine_options: dict = field(default_factory=dict)
    """Engine-specific keywords (:class:`EngineOptions` ``extra``), e.g. ``{"engine_kwargs": {"enforce_eager": True}}``
    for vLLM, ``{"processor": {"concurrency": 4}}`` for ray-vllm."""
    shard_index: int = 0
    shard_count: int = 1
    """With shard_count > 1 this process only samples its share of the batches (index % count) into the shared
    journal and returns; a later run without shards scores, merges and writes results."""
    instruction: str | None = setting(AUTO_INSTRUCTION, flag="--instruction", help=(
        f"Appended to every question. '{AUTO_INSTRUCTION}': what the checkpoint declares in ptlens_stage.json, "
        f"else '{DEFAULT_INSTRUCTION}'; '' for none."))
    """Appended to each question; "auto": what the checkpoint declares, else DEFAULT_INSTRUCTION; None/"": none."""
    overwrite: bool = setting(False, flag="--overwrite", help="Replace stored results made with other settings.")
    allow_pickle: bool = ALLOW_PICKLE.field()
    n_boot: int = 1000
    ks: list[int] | None = None
    figures: bool = True

    def validate(self) -> None:
        """Every field's check, then the shard pair (the one check across fields)."""
        check_fields(self)
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

