"""The prompt a model is given: its chat template or a plain "Question: … Answer:", the instruction it gets, and
the tokenizer that turns the prompt into ids (the same ids for every engine and for scoring)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptlens.errors import PtlensError


DEFAULT_INSTRUCTION = "Put the final answer in \\boxed{}."



AUTO_INSTRUCTION = "auto"



PLAIN_STOP = ("\nQuestion:",)



@dataclass(frozen=True)
class Prompt:
    """The exact text given to a model, the strings that end its answer, and whether a chat template made it."""

    text: str
    stop: tuple[str, ...]
    chat: bool



def build_prompt(tokenizer: Any, question: str, instruction: str | None = DEFAULT_INSTRUCTION) -> Prompt:
    """The model's own chat template when it has one; else "Question: …\\nAnswer:" ending at the next "Question:"."""
    body = f"{question}\n{instruction}" if instruction else question
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": body}], add_generation_prompt=True,
                                             tokenize=False)
        return Prompt(text=text, stop=(), chat=True)
    return Prompt(text=f"Question: {question}\n{instruction}\nAnswer:" if instruction else f"Question: {question}\nAnswer:",
                  stop=PLAIN_STOP, chat=False)



def model_instruction(path: Path | None, requested: str | None) -> str | None:
    """The instruction a model gets: ``requested``, or with ``"auto"`` the one its folder declares.

    A checkpoint may declare how it was trained to be asked with ``"instruction"`` in its
    ``ptlens_stage.json`` (the lab's models take the bare question: ``""``); otherwise
    :data:`DEFAULT_INSTRUCTION`. An empty string means no instruction.
    """
    if requested != AUTO_INSTRUCTION:
        return requested or None
    f = Path(path) / "ptlens_stage.json" if path else None
    if f is not None and f.is_file():
        try:
            declared = json.loads(f.read_text()).get("instruction", DEFAULT_INSTRUCTION)
        except (ValueError, AttributeError):
            raise PtlensError(f"{f}: unreadable (expected a JSON object)") from None
        if declared is not None and not isinstance(declared, str):
            raise PtlensError(f"{f}: 'instruction' must be a string")
        return declared or None
    return DEFAULT_INSTRUCTION



def load_tokenizer(path: Path, name: str) -> Any:
    """The checkpoint's tokenizer, or a one-line error naming the model when there is none."""
    from transformers import AutoTokenizer

    has_files = any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json"))
    if not has_files:
        raise PtlensError(f"model {name} ({path}): no tokenizer files (tokenizer.json / tokenizer_config.json); "
                          "behaviour analysis needs a tokenizer saved with the model")
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise PtlensError(f"model {name} ({path}): cannot load its tokenizer: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if tok.eos_token_id is None:
        raise PtlensError(f"model {name} ({path}): its tokenizer has no end-of-text token")
    return tok



def prompt_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of a prompt: chat templates already hold the BOS token, plain prompts get the tokenizer's usual specials."""
    return tokenizer(prompt.text, add_special_tokens=not prompt.chat).input_ids
