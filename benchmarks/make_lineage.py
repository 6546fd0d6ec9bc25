"""Write a realistic synthetic 4-checkpoint lineage (base → sft → dpo → rlvr) for benchmarks.

Real tensor names, shapes, dtype (bf16) and sharding (index + several shards) of Llama-3.2-1B or
of Llama-3.1-8B with a chosen number of layers (untied head; vocabulary resized 128256 → 128264
after the base, as in Tülu 3). Planted updates of known character: dense small updates for sft
and dpo, sparse updates touching a chosen share of entries for rlvr. Seeded; written one shard at
a time so memory stays at a few shard sizes.

    python benchmarks/make_lineage.py --arch llama-3.1-8b --layers 2 --out /tmp/lin8b-2
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from ptlens.synth import LLAMA_3_2_1B, LlamaShape, llama_3_1_8b

STAGES = (("sft", 2e-2, 1.0), ("dpo", 4e-3, 1.0), ("rlvr", 2e-3, None))


def _versions(name: str, shp: tuple[int, ...], seed: int, rlvr_density: float, vocab_added: int, is_vocab: bool):
    """base, sft, dpo, rlvr versions of one tensor (bf16)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    if len(shp) == 1:
        x = 1.0 + 0.05 * torch.randn(shp, generator=g)
    else:
        x = 0.02 * torch.randn(shp, generator=g)
    out = [x.to(torch.bfloat16)]
    scale0 = float(x.abs().mean())
    for label, scale, density in STAGES:
        x = out[-1].float()
        noise = torch.randn(x.shape, generator=g).mul_(scale * scale0)
        d = rlvr_density if density is None else density
        if d < 1.0:
            noise.mul_(torch.rand(x.shape, generator=g) < d)
        x.add_(noise)
        if label == "sft" and vocab_added and is_vocab:
            x = torch.cat([x, 0.02 * torch.randn((vocab_added, x.shape[1]), generator=g)])
        out.append(x.to(torch.bfloat16))
    return out


def make(out: Path, shape: LlamaShape, vocab_added: int, shards: int, rlvr_density: float, seed: int = 0) -> None:
    shapes = shape.tensor_shapes()
    names = list(shapes)
    labels = ["base"] + [s[0] for s in STAGES]
    sizes = {n: 2 * int(torch.Size(s).numel()) for n, s in shapes.items()}
    target = sum(sizes.values()) / shards
    groups, cur, acc = [], [], 0
    for n in names:
        cur.append(n)
        acc += sizes[n]
        if acc >= target and len(groups) < shards - 1:
            groups.append(cur)
            cur, acc = [], 0
    if cur:
        groups.append(cur)
    weight_maps = {l: {} for l in labels}
    for s, group in enumerate(groups):
        fname = f"model-{s + 1:05d}-of-{len(groups):05d}.safetensors"
        parts = {l: {} for l in labels}
        for n in group:
            vocab = n.endswith(("embed_tokens.weight", "lm_head.weight"))
            for l, t in zip(labels, _versions(n, shapes[n], seed, rlvr_density, vocab_added, vocab)):
                parts[l][n] = t
        for l in labels:
            (out / l).mkdir(parents=True, exist_ok=True)
            save_file(parts[l], str(out / l / fname), metadata={"format": "pt"})
            weight_maps[l].update({n: fname for n in group})
        del parts
    for i, l in enumerate(labels):
        vocab = shape.vocab + (vocab_added if i > 0 else 0)
        (out / l / "config.json").write_text(json.dumps(shape.config(vocab), indent=2))
        total = sum((out / l / f).stat().st_size for f in set(weight_maps[l].values()))
        (out / l / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_maps[l]}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["llama-3.2-1b", "llama-3.1-8b"], default="llama-3.2-1b")
    ap.add_argument("--layers", type=int, default=None, help="layers (llama-3.1-8b; default 32)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rlvr-density", type=float, default=0.3, help="share of entries the rlvr update touches")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.arch == "llama-3.2-1b":
        shape, added = LLAMA_3_2_1B if a.layers is None else LlamaShape(**{**LLAMA_3_2_1B.__dict__, "layers": a.layers}), 0
    else:
        shape, added = llama_3_1_8b(a.layers or 32), 8
    t0 = time.time()
    make(a.out, shape, added, a.shards, a.rlvr_density, a.seed)
    size = sum(f.stat().st_size for f in a.out.rglob("*.safetensors"))
    print(f"wrote {a.out} ({size / 1e9:.2f} GB, 4 checkpoints) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
