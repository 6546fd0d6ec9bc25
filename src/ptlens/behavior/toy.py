"""Tiny random chat models with a character tokenizer, for tests and benchmarks of the behaviour pipeline.

They answer nonsense, but they are real ``LlamaForCausalLM`` folders with a saved tokenizer
and chat template, so every code path (templates, padding, stop strings, scoring) runs for real
in seconds on a CPU.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ("<pad>", "<s>", "</s>", "<unk>")
CHARS = tuple(c for c in string.printable if c not in "\t\r\x0b\x0c")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}\n"
    "{% else %}<|assistant|>\n{{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def char_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    """A character-level fast tokenizer over printable ASCII, optionally with a chat template."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + CHARS)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=True))
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>")
    if chat_template:
        tok.chat_template = chat_template
    return tok


def make_toy_model(path: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2,
                   chat_template: str | None = CHAT_TEMPLATE, tokenizer: bool = True,
                   logit_bias: dict[str, float] | None = None, noise: float = 1.0) -> Path:
    """Save a ~50k-parameter random Llama (and its tokenizer) to ``path``.

    ``logit_bias`` (token → bias, e.g. ``{"</s>": 5.0}``) shapes what it says: hidden
    dimension 0 carries a constant that no layer writes to, and the head reads the bias from
    it; ``noise`` scales the random rest of the head (0 gives a model that only follows the bias).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = char_tokenizer(chat_template)
    config = LlamaConfig(vocab_size=len(SPECIAL) + len(CHARS), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0 * noise)
        if logit_bias:
            vocab = tok.get_vocab()
            model.model.embed_tokens.weight[:, 0] = 1.0
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight[0, :] = 0.0
                layer.mlp.down_proj.weight[0, :] = 0.0
            model.model.norm.weight[0] = 1.0
            scale = hidden ** -0.5
            model.lm_head.weight[:, 0] = 0.0
            for token, bias in logit_bias.items():
                model.lm_head.weight[vocab[token], 0] = bias * scale
    model.generation_config.pad_token_id = 0
    model.save_pretrained(path)
    if tokenizer:
        tok.save_pretrained(path)
    return path


TINY_VOCAB = ("<s>", "</s>", "a", "b", "c")


def make_tiny_vocab_model(path: str | Path, seed: int = 0, hidden: int = 16, sharpness: float = 0.5) -> Path:
    """A random Llama over five tokens (``<s> </s> a b c``, ``</s>`` ends and pads) with a word-level tokenizer.

    Small enough that every response of a few tokens can be enumerated, which is how the cross-model KL
    is checked against the exact sequence KL (tests/test_kl.py). ``sharpness`` scales the head: larger
    values make peaked next-token distributions whose tails top-p cuts.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(TINY_VOCAB)}, unk_token="</s>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    config = LlamaConfig(vocab_size=len(TINY_VOCAB), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=1,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness / (float(model.lm_head.weight.std()) * hidden ** 0.5))
    model.generation_config.pad_token_id = 1
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
