"""Tiny random lineages of the presets' architectures, built offline from transformers' config classes.

Each family keeps its real tensor names and layout (Llama-3.1's llama3 RoPE scaling, OLMo 2's
q_norm/k_norm, Qwen2's q/k/v biases and tied embeddings, Mistral's sliding window, Mixtral's
per-expert storage) at hidden 64, 2 layers, head_dim 32, the shipped character tokenizer (103 ids),
bfloat16 safetensors. Stages carry planted, exactly known changes:

- every later stage doubles ``model.layers.1.mlp.down_proj.weight`` of the stage before (×2 is exact in
  bfloat16, so that tensor's rel_change is exactly 1 and every other tensor's is 0, except as below);
- ``resize``: sft adds :data:`ADDED` rows to the embedding and head, and the tokenizer of every stage
  holds the added tokens (so the base is asked to score ids it cannot embed);
- ``untie``: the base ties its head to its embedding, sft stores ``lm_head.weight`` = the base's embedding
  + a change of known size;
- ``shards``: every stage is saved in several shards with ``model.safetensors.index.json``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

TINY = Path(__file__).resolve().parents[1] / "src" / "ptlens" / "data" / "tiny"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "ptlens_stage.json")
VOCAB = 103
ADDED = 8
PLANTED = "model.layers.1.mlp.down_proj.weight"
"""The tensor every later stage doubles (Mixtral: expert 0's w2 instead, see :func:`planted_name`)."""
HEAD_DELTA = 0.5
"""untie: sft's lm_head = base embedding + HEAD_DELTA × its own norm in a random direction (rel_change 0.5)."""


def _common(vocab: int) -> dict:
    return dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=32, max_position_embeddings=512, pad_token_id=0, bos_token_id=1,
                eos_token_id=2)


def family_config(family: str, vocab: int = VOCAB, tied: bool = False):
    from transformers import LlamaConfig, MistralConfig, MixtralConfig, Olmo2Config, Qwen2Config

    c = _common(vocab)
    if family == "llama31":
        return LlamaConfig(**c, tie_word_embeddings=tied, rope_theta=500000.0,
                           rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 256})
    if family == "olmo2":
        return Olmo2Config(**c, tie_word_embeddings=tied)
    if family == "qwen2":  # q/k/v biases are part of the architecture
        return Qwen2Config(**c, tie_word_embeddings=tied)
    if family == "mistral":
        return MistralConfig(**c, tie_word_embeddings=tied, sliding_window=16)
    if family == "mixtral":
        c["intermediate_size"] = 64
        return MixtralConfig(**c, tie_word_embeddings=tied, num_local_experts=4, num_experts_per_tok=2)
    raise ValueError(family)


TIED = ("qwen2",)
"""Families whose checkpoints tie the head to the embedding (Qwen2 at small sizes)."""


def planted_name(family: str) -> str:
    return "model.layers.1.block_sparse_moe.experts.0.w2.weight" if family == "mixtral" else PLANTED


def _tokenizer(added: int):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY / "sft")
    if added:
        tok.add_tokens([f"<|extra_{i}|>" for i in range(added)])
    return tok


def _save(model, tok, path: Path, shards: bool) -> Path:
    model.to(torch.bfloat16).save_pretrained(path, max_shard_size="40KB" if shards else "2GB")
    tok.save_pretrained(path)
    shutil.copy(TINY / "sft" / "ptlens_stage.json", path / "ptlens_stage.json")
    return path


def make_lineage(root: Path, family: str, stages: tuple[str, ...] = ("base", "sft", "rlvr"), *, resize: bool = False,
                 untie: bool = False, shards: bool = False, seed: int = 0) -> list[str]:
    """Write the lineage's checkpoints under ``root``; returns ``label=path`` arguments in lineage order."""
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(ADDED if resize else 0)
    tied = family in TIED
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(family_config(family, tied=tied or untie))
    if not (tied or untie):  # trained-size embeddings and head, so the layers do not drown them and answers vary
        with torch.no_grad():  # (a large tied head would make every model repeat its last token)
            model.get_input_embeddings().weight.normal_(0, 0.5)
            model.get_output_embeddings().weight.normal_(0, 0.5)
    model = model.to(torch.bfloat16)
    args = [f"{stages[0]}={_save(model, tok, root / stages[0], shards)}"]
    g = torch.Generator().manual_seed(seed + 1)
    for k, label in enumerate(stages[1:]):
        sd = {n: t.clone() for n, t in model.state_dict().items()}
        cfg = family_config(family, VOCAB + ADDED if resize else VOCAB, tied=tied and not untie)
        nxt = AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16)
        if k == 0 and untie:
            emb = sd["model.embed_tokens.weight"].float()
            d = torch.randn(emb.shape, generator=g)
            sd["lm_head.weight"] = (emb + HEAD_DELTA * emb.norm() * d / d.norm()).to(torch.bfloat16)
        if k == 0 and resize:
            for n in ("model.embed_tokens.weight", "lm_head.weight"):
                new = 0.5 * torch.randn((ADDED, sd[n].shape[1]), generator=g)
                sd[n] = torch.cat([sd[n], new.to(torch.bfloat16)])
        _double(nxt, sd, family)
        model = nxt
        args.append(f"{label}={_save(model, tok, root / label, shards)}")
    return args


def _double(model, sd: dict, family: str) -> None:
    """Load ``sd`` into ``model`` with the planted MLP tensor doubled (exact in bfloat16)."""
    with torch.no_grad():
        if family == "mixtral":  # transformers fuses the experts: expert 0 of layer 1's down projection
            sd["model.layers.1.mlp.experts.down_proj"][0] *= 2
        else:
            sd[PLANTED] *= 2
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
