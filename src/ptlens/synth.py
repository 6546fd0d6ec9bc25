"""Llama-shaped checkpoints with planted, known changes.

The tests recover these plants to 1e-6, the benchmarks stream real-sized ones, and until a
trained tiny lineage ships, ``ptlens run`` analyses one made here. Everything is seeded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file


@dataclass(frozen=True)
class LlamaShape:
    vocab: int = 256
    hidden: int = 64
    intermediate: int = 172
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    tied: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def tensor_shapes(self, vocab: int | None = None) -> dict[str, tuple[int, ...]]:
        v, h, f = vocab or self.vocab, self.hidden, self.intermediate
        kv = self.kv_heads * self.head_dim
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
        for i in range(self.layers):
            p = f"model.layers.{i}."
            shapes.update({
                p + "input_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (h, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, h),
                p + "post_attention_layernorm.weight": (h,),
                p + "mlp.gate_proj.weight": (f, h),
                p + "mlp.up_proj.weight": (f, h),
                p + "mlp.down_proj.weight": (h, f),
            })
        shapes["model.norm.weight"] = (h,)
        if not self.tied:
            shapes["lm_head.weight"] = (v, h)
        return shapes

    def config(self, vocab: int | None = None, dtype: str = "bfloat16") -> dict:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab or self.vocab,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "tie_word_embeddings": self.tied,
            "hidden_act": "silu",
            "torch_dtype": dtype,
            "bos_token_id": 1,
            "eos_token_id": 2,
        }


LLAMA_3_2_1B = LlamaShape(vocab=128256, hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, tied=True)


def llama_3_1_8b(layers: int = 32) -> LlamaShape:
    return LlamaShape(vocab=128256, hidden=4096, intermediate=14336, layers=layers, heads=32, kv_heads=8, tied=False)


def random_weights(shape: LlamaShape, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                   vocab: int | None = None) -> dict[str, torch.Tensor]:
    """Weights with the statistics of a trained Llama: N(0, 0.02) matrices, ~1 norms."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shp in shape.tensor_shapes(vocab).items():
        if len(shp) == 1:
            t = 1.0 + 0.05 * torch.randn(shp, generator=g)
        else:
            t = 0.02 * torch.randn(shp, generator=g)
        out[name] = t.to(dtype)
    return out


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], config: dict,
                    shards: int = 1) -> Path:
    """Write a Hugging Face-style folder: config.json and one or several safetensors shards."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    names = list(tensors)
    if shards <= 1:
        save_file({k: tensors[k].contiguous() for k in names}, str(path / "model.safetensors"),
                  metadata={"format": "pt"})
        return path
    per = -(-len(names) // shards)
    weight_map, total = {}, 0
    for s in range(shards):
        part = names[s * per:(s + 1) * per]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k].contiguous() for k in part}, str(path / fname), metadata={"format": "pt"})
        for k in part:
            weight_map[k] = fname
            total += tensors[k].numel() * tensors[k].element_size()
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return path


@dataclass(frozen=True)
class PlantedStage:
    """One synthetic post-training stage: a dense update of ``scale`` × |W| on ``density`` of entries."""

    label: str
    scale: float
    density: float = 1.0
    vocab_added: int = 0


DEFAULT_STAGES = (
    PlantedStage("sft", scale=2e-2, density=1.0),
    PlantedStage("dpo", scale=4e-3, density=1.0),
    PlantedStage("rlvr", scale=2e-3, density=0.3),
)


@dataclass
class SynthLineage:
    root: Path
    shape: LlamaShape
    stages: list[str] = field(default_factory=list)

    def model_args(self) -> list[str]:
        return [f"{s}={self.root / s}" for s in self.stages]


def make_lineage(root: str | Path, shape: LlamaShape = LlamaShape(), stages=DEFAULT_STAGES,
                 seed: int = 0, shards: int = 1, dtype: torch.dtype = torch.bfloat16) -> SynthLineage:
    """base + planted stages, each built from the previous one (a real lineage's order)."""
    root = Path(root)
    g = torch.Generator().manual_seed(seed + 1)
    w = random_weights(shape, seed=seed, dtype=dtype)
    vocab = shape.vocab
    dname = str(dtype).removeprefix("torch.")
    save_checkpoint(root / "base", w, shape.config(vocab, dname), shards=shards)
    labels = ["base"]
    for st in stages:
        new = {}
        for name, t in w.items():
            x = t.float()
            noise = torch.randn(x.shape, generator=g) * st.scale * x.abs().mean()
            if st.density < 1.0:
                noise = noise * (torch.rand(x.shape, generator=g) < st.density)
            x = x + noise
            if st.vocab_added and x.ndim == 2 and name.endswith(("embed_tokens.weight", "lm_head.weight")):
                extra = 0.02 * torch.randn((st.vocab_added, x.shape[1]), generator=g)
                x = torch.cat([x, extra])
            new[name] = x.to(dtype)
        vocab += st.vocab_added
        w = new
        save_checkpoint(root / st.label, w, shape.config(vocab, dname), shards=shards)
        labels.append(st.label)
    return SynthLineage(root=root, shape=shape, stages=labels)
