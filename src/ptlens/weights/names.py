"""What a tensor is, from its name: module kind, group and layer (DESIGN.md vocabulary)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|block|layer)\.(\d+)\.")

_KIND_GROUP = {
    "q_proj": "attention", "k_proj": "attention", "v_proj": "attention", "o_proj": "attention",
    "qkv_proj": "attention", "query_key_value": "attention", "c_attn": "attention", "dense": "attention",
    "q_norm": "norm", "k_norm": "norm",
    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp", "gate_up_proj": "mlp",
    "fc1": "mlp", "fc2": "mlp", "c_fc": "mlp", "c_proj": "mlp", "w1": "mlp", "w2": "mlp", "w3": "mlp",
    "embed_tokens": "embedding", "wte": "embedding", "word_embeddings": "embedding", "embed_in": "embedding",
    "lm_head": "head", "embed_out": "head",
    "input_layernorm": "norm", "post_attention_layernorm": "norm", "pre_feedforward_layernorm": "norm",
    "post_feedforward_layernorm": "norm", "norm": "norm", "ln_f": "norm", "ln_1": "norm", "ln_2": "norm",
    "final_layernorm": "norm",
}
_GROUP_PARENTS = {"self_attn": "attention", "attn": "attention", "attention": "attention", "mlp": "mlp"}

GROUPS = ("attention", "mlp", "embedding", "head", "norm", "other")


@dataclass(frozen=True)
class TensorRole:
    kind: str
    group: str
    layer: int | None
    param: str  # "weight", "bias", ...

    @property
    def is_vocab(self) -> bool:
        """Embedding and head matrices: the only ones whose rows may be added between stages."""
        return self.group in ("embedding", "head")


def parse_name(name: str) -> TensorRole:
    """``model.layers.3.self_attn.q_proj.weight`` → kind q_proj, group attention, layer 3."""
    parts = name.split(".")
    param = parts[-1] if len(parts) > 1 else "weight"
    m = _LAYER.search(name)
    layer = int(m.group(1)) if m else None
    mods = parts[:-1] if len(parts) > 1 else parts
    kind = mods[-1] if mods else name
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
