"""Tiny Llama-shaped checkpoints with planted changes, for the weight-scan tests."""

from __future__ import annotations

from pathlib import Path

import torch

from ptlens.resolve import resolve_lineage
from ptlens.synth import LlamaShape, random_weights, save_checkpoint
from ptlens.weights import ScanConfig, scan_lineage

SHAPE = LlamaShape(vocab=256, hidden=64, intermediate=96, layers=2, heads=4, kv_heads=2)


def write_lineage(root: Path, stages: dict[str, dict[str, torch.Tensor]], shape: LlamaShape = SHAPE,
                  shards: int = 1) -> list[str]:
    args = []
    for label, tensors in stages.items():
        vocab = tensors["model.embed_tokens.weight"].shape[0] if "model.embed_tokens.weight" in tensors else shape.vocab
        save_checkpoint(root / label, tensors, shape.config(vocab), shards=shards)
        args.append(f"{label}={root / label}")
    return args


def base_weights(dtype=torch.float32, seed: int = 0, shape: LlamaShape = SHAPE) -> dict[str, torch.Tensor]:
    return random_weights(shape, seed=seed, dtype=dtype)


def scan(args: list[str], **cfg):
    return scan_lineage(resolve_lineage(models=args), ScanConfig(**cfg))


def record(result, tensor: str, transition: str):
    return next(r for r in result.records if r.tensor == tensor and r.transition == transition)
