"""The tiny Llama, its checkpoints on disk, and greedy/sampled answers from it.

A checkpoint folder is what any ``from_pretrained`` user expects (``config.json``,
``model.safetensors``, ``generation_config.json``, tokenizer files) plus
``ptlens_stage.json``, the stage facts ``ptlens.resolve`` attaches to the checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ptlens.behavior.grading import grade
from ptlens.behavior.problems import Problem
from ptlens.lab.config import ModelShape
from ptlens.lab.data import user_messages
from ptlens.lab.tokenizer import save_tokenizer


def new_model(shape: ModelShape, tok, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


def load_model(folder: Path):
    """A stored checkpoint upcast to float32: the master weights the next stage trains."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def save_checkpoint(model, tok, folder: Path, facts: dict, extra: dict | None = None,
                    dtype: str = "bfloat16") -> int:
    """Write one checkpoint atomically (temp folder + rename), weights cast to ``dtype``; returns its size in bytes.

    The model being trained keeps its float32 weights; a copy is cast (round to nearest) for storage,
    as a bf16 release of an fp32-trained model is. ``ptlens_stage.json`` holds ``{"facts": …}``
    (the StageFacts fields) plus ``extra`` (stage label, optimizer step, items and tokens seen so far).
    """
    import copy

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        _remove_tree(tmp)
    stored = copy.deepcopy(model).to(getattr(torch, dtype))
    stored.save_pretrained(tmp, safe_serialization=True)
    save_tokenizer(tok, tmp)
    (tmp / "ptlens_stage.json").write_text(json.dumps({"facts": facts, **(extra or {})}, indent=2) + "\n")
    for f in tmp.iterdir():
        f.chmod(0o644)
    if folder.exists():
        _remove_tree(folder)
    os.replace(tmp, folder)
    return sum(f.stat().st_size for f in folder.iterdir())


def _remove_tree(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()


def prompt_ids(tok, problems: list[Problem]) -> list[list[int]]:
    return [tok.apply_chat_template(user_messages(p), add_generation_prompt=True, tokenize=True, return_dict=False)
            for p in problems]


@torch.no_grad()
def generate(model, tok, problems: list[Problem], *, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, num_return_sequences: int = 1, batch_size: int = 64) -> list[list[str]]:
    """Completions per problem (left-padded batches): greedy at temperature 0, else sampled."""
    from transformers import GenerationConfig

    model.eval()
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 else {}
    config = GenerationConfig(max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                              bos_token_id=tok.bos_token_id, **sampling)
    ids = prompt_ids(tok, problems)
    out: list[list[str]] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        width = max(len(x) for x in chunk)
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in chunk])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in chunk])
        gen = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
        texts = tok.batch_decode(gen[:, width:], skip_special_tokens=True)
        for i in range(len(chunk)):
            out.append(texts[i * num_return_sequences:(i + 1) * num_return_sequences])
    return out


def sample_correct(model, tok, problems: list[Problem], max_new_tokens: int, temperature: float = 0.0,
                   top_p: float = 1.0, samples: int = 1, seed: int = 0) -> list[int]:
    """Correct answers per problem (by ptlens's grader) out of ``samples``: greedy at temperature 0 (one answer)."""
    from transformers import set_seed

    set_seed(seed)
    k = samples if temperature > 0 else 1
    answers = generate(model, tok, problems, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       num_return_sequences=k)
    return [sum(grade(t, p.answer).correct for t in texts) for p, texts in zip(problems, answers)]


def accuracy_by_tag(problems: list[Problem], correct: list[int], samples: int) -> dict[str, float]:
    """Share of correct answers per tag of the problems (``level1`` …, ``in-distribution``, ``held-out``)."""
    groups: dict[str, list[int]] = {}
    for p, c in zip(problems, correct):
        for t in p.tags:
            groups.setdefault(t, []).append(c)
    return {t: round(sum(v) / (len(v) * samples), 4) for t, v in sorted(groups.items())}
