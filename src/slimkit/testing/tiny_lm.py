"""A tiny causal LM with a tokenizer, both built offline: for tests of generation and serving.

The tokenizer is a word-level ``tokenizers`` model over a few sentences (plus special tokens
and a small chat template); the model a randomly initialised Llama (grouped-query attention)
from transformers' config classes. Its text is random, but deterministic for a seed.
"""

from __future__ import annotations

from typing import Any

SENTENCES = (
    "the capital of france is paris .",
    "hello , how are you today ?",
    "what is the capital of france ?",
    "a small model runs fast on a cpu .",
    "tell me a story about a cat and a dog .",
)
SPECIALS = ("<unk>", "<pad>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def tiny_tokenizer(chat_template: bool = True) -> Any:
    """A word-level fast tokenizer over :data:`SENTENCES` (unknown words: ``<unk>``).

    Example:
        >>> tok = tiny_tokenizer()
        >>> tok.decode(tok("the capital of france")["input_ids"])
        'the capital of france'
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for s in SENTENCES for w in s.split()})
    vocab = {t: i for i, t in enumerate((*SPECIALS, *words))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                  eos_token="<eos>",
                                  additional_special_tokens=list(SPECIALS[3:]))
    tok.chat_template = CHAT_TEMPLATE if chat_template else None
    return tok


def tiny_causal_lm(seed: int = 0, context: int = 64, chat_template: bool = True) -> Any:
    """A :class:`~slimkit.serve.llm.load.CausalLM`: a 2-layer Llama (4 heads, 2 KV heads)
    over :func:`tiny_tokenizer`, ``context`` positions.

    Example:
        >>> lm = tiny_causal_lm()
        >>> lm.module.config.num_key_value_heads, lm.eos_token_ids
        (2, (2,))
    """
    import torch
    import transformers

    from slimkit.serve.llm.load import CausalLM

    tok = tiny_tokenizer(chat_template)
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=context,
        initializer_range=0.3, bos_token_id=None, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config).eval()
    return CausalLM("tiny-llama", model, tok, (int(tok.eos_token_id),))
