"""The script users write today: load both checkpoints whole with transformers, diff each parameter.

    python benchmarks/naive_diff.py A_DIR B_DIR [C_DIR …]   # every consecutive and cumulative transition
"""

from __future__ import annotations

import sys

import torch
from transformers import AutoModelForCausalLM


def load(path: str) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    return {k: v.detach() for k, v in model.state_dict().items()}


def diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, tuple[float, float, float]]:
    out = {}
    for name, wa in a.items():
        wb = b.get(name)
        if wb is None:
            continue
        rows = min(wa.shape[0], wb.shape[0]) if wa.ndim else None
        if wa.ndim and wa.shape[1:] == wb.shape[1:]:
            wa, wb = wa[:rows], wb[:rows]
        fa, fb = wa.float(), wb.float()
        d = fb - fa
        out[name] = (float(d.norm()), float(d.norm() / fa.norm()), float((wa != wb).float().mean()))
    return out


def main(paths: list[str]) -> None:
    pairs = [(i, i + 1) for i in range(len(paths) - 1)] + [(0, j) for j in range(2, len(paths))]
    for i, j in pairs:
        a, b = load(paths[i]), load(paths[j])
        res = diff(a, b)
        total = sum(v[0] ** 2 for v in res.values()) ** 0.5
        print(f"{i}->{j}: {len(res)} tensors, ||dW|| = {total:.4g}")
        del a, b


if __name__ == "__main__":
    main(sys.argv[1:])
