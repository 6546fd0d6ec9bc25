"""What a tensor is, from its name: module kind, group and layer (the vocabulary of docs/METRICS.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|block|layer)\.(\d+)\.")

_KIND_GROUP = {
    "q_proj": "attention", "k_proj": "attention", "v_proj": "attention", "o_proj": "attention",
    "qkv_proj": "attention", "query_key_value": "attention", "c_attn": "attention", "dense": "attention",
    "q_norm": "attention", "k_norm": "attention",  # per-head norms inside attention (OLMo 2, Gemma 3, Qwen3)
    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp", "gate_up_proj": "mlp",
    "fc1": "mlp", "fc2": "mlp", "c_fc": "mlp", "c_proj": "mlp", "w1": "mlp", "w2": "mlp", "w3": "mlp",
    "embed_tokens": "embedding", "wte": "embedding", "word_embeddings": "embedding", "embed_in": "embedding",
    "wpe": "embedding", "embeddings": "embedding",  # GPT-2 positions; Mamba's ``backbone.embeddings``
    "lm_head": "head", "embed_out": "head",
    "input_layernorm": "norm", "post_attention_layernorm": "norm", "pre_feedforward_layernorm": "norm",
    "post_feedforward_layernorm": "norm", "norm": "norm", "ln_f": "norm", "ln_1": "norm", "ln_2": "norm",
    "final_layernorm": "norm", "norm_f": "norm", "final_layer_norm": "norm",
    "router": "mlp",
}
_MOE_PARENTS = ("mlp", "block_sparse_moe", "moe", "feed_forward", "sparse_moe_block")
"""Modules whose ``gate`` is a mixture-of-experts router (Mixtral ``block_sparse_moe.gate``, Qwen2-MoE/OLMoE ``mlp.gate``)."""
_ROUTERS = ("gate", "router", "shared_expert_gate")
_GROUP_PARENTS = {"self_attn": "attention", "attn": "attention", "attention": "attention", "mlp": "mlp"}

_POSITION_KINDS = ("wpe", "embed_positions", "position_embeddings")

GROUPS = ("attention", "mlp", "embedding", "head", "norm", "other")


@dataclass(frozen=True)
class TensorRole:
    kind: str
    group: str
    layer: int | None
    param: str  # "weight", "bias", ...

    @property
    def is_vocab(self) -> bool:
        """Token embedding and head matrices: the only ones whose rows may be added between stages (not GPT-2's
        position table ``wpe``, whose rows are positions)."""
        return self.group in ("embedding", "head") and self.kind not in _POSITION_KINDS


def parse_name(name: str) -> TensorRole:
    """``model.layers.3.self_attn.q_proj.weight`` → kind q_proj, group attention, layer 3."""
    parts = name.split(".")
    param = parts[-1] if len(parts) > 1 else "weight"
    m = _LAYER.search(name)
    layer = int(m.group(1)) if m else None
    mods = parts[:-1] if len(parts) > 1 else parts
    kind = mods[-1] if mods else name
    if kind in _ROUTERS and len(mods) > 1 and mods[-2] in _MOE_PARENTS:
        return TensorRole(kind="router", group="mlp", layer=layer, param=param)
    if "experts" in mods or "block_sparse_moe" in mods:  # every expert's weights are MLP weights
        return TensorRole(kind=kind, group="mlp", layer=layer, param=param)
    group = _KIND_GROUP.get(kind)
    if group is None:
        group = next((g for p, g in _GROUP_PARENTS.items() if p in mods), "other")
    elif kind in ("dense", "c_proj") and not any(p in mods for p in _GROUP_PARENTS):
        group = "other"
    elif kind in ("dense", "c_proj"):
        group = next(g for p, g in _GROUP_PARENTS.items() if p in mods)
    if kind == "norm" and layer is not None:
        group = "norm"
    return TensorRole(kind=kind, group=group, layer=layer, param=param)


def architecture_note(names: Iterable[str]) -> str | None:
    """One line when the decoder layers hold neither attention nor MLP tensors (Mamba's mixers, RWKV's time mixing):
    ptlens's attention/MLP questions do not apply and those tensors are classed "other". None for a transformer."""
    roles = [parse_name(n) for n in names]
    in_layers = [r for r in roles if r.layer is not None]
    if not in_layers or any(r.group in ("attention", "mlp") for r in in_layers):
        return None
    kinds = sorted({r.kind for r in in_layers if r.group == "other"})
    return (f"no attention or MLP tensors in the layers (layer modules: {', '.join(kinds[:6])}"
            f"{', …' if len(kinds) > 6 else ''}): not a transformer architecture ptlens understands (a state-space "
            "model such as Mamba?); attention/MLP questions do not apply and these tensors are classed 'other'")
