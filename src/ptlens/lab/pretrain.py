"""Stage 1, base: next-token pretraining from random initialisation on raw arithmetic text.

A plain torch loop rather than a TRL trainer: pretraining is not a post-training recipe,
packed fixed-size blocks need no collator, masking or chat template, and a bare loop of
AdamW steps is the cheapest way to spend the CPU budget that this stage needs most.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ptlens.lab.config import PretrainPlan


def pack(tok, documents: list[str], seq_len: int) -> torch.Tensor:
    """All documents, each followed by EOS, concatenated and cut into ``seq_len`` blocks."""
    ids: list[int] = []
    for doc in documents:
        ids.extend(tok(doc, add_special_tokens=False)["input_ids"])
        ids.append(tok.eos_token_id)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(model, blocks: torch.Tensor, plan: PretrainPlan, seed: int,
             on_step: Callable[[int, float], None]) -> int:
    """Train in place for ``plan.steps`` random batches of blocks; returns the tokens seen.

    ``on_step(step, loss)`` runs after every optimizer step (step counts from 1), so the caller
    can save trajectory checkpoints and report progress.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=plan.learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, plan.steps // 20)
    model.train()
    for step in range(plan.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, plan.steps, plan.learning_rate, warmup)
        batch = blocks[torch.randint(len(blocks), (plan.batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        on_step(step + 1, loss.item())
    model.eval()
    return plan.steps * plan.batch_size * blocks.shape[1]
