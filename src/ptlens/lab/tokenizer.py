"""The lab's character-level tokenizer, saved as a standard Hugging Face fast tokenizer.

One token per ASCII character keeps the model tiny and makes every number's digits visible
to it. The chat template follows Tülu's plain-text headers (``<|user|>\\n…\\n<|assistant|>\\n``)
and renders a prompt as an exact prefix of the same conversation with its answer, which TRL
needs to tell prompt from completion. No BOS is added anywhere, so encoding the rendered text
and tokenizing the conversation give the same ids.
"""

from __future__ import annotations

import json
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
CHARS = ("\n",) + tuple(chr(i) for i in range(32, 127))

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` over printable ASCII and newline, plus pad/bos/eos/unk and role headers."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = (PAD, BOS, EOS, UNK) + ROLE_TOKENS
    vocab = {tok: i for i, tok in enumerate(specials + CHARS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens=list(ROLE_TOKENS),
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(tok, folder: Path) -> None:
    """Save, naming the portable class so transformers 4.x and 5.x both load it."""
    tok.save_pretrained(folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
