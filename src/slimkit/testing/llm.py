"""Tiny random-init decoder LMs for fast tests: Llama with grouped-query attention, Qwen2,
Mistral and Phi3 (transformers' own config classes), with a small byte-level BPE tokenizer and
a chat template, written as Hugging Face folders (safetensors)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 320
_COMMON: dict[str, Any] = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "max_position_embeddings": 256, "bos_token_id": 0, "eos_token_id": 2,
           "pad_token_id": 0, "rms_norm_eps": 1e-5,
           "initializer_range": 0.2}  # logits of a few units, so tolerances bite


def _configs() -> dict[str, Callable[[], Any]]:
    import transformers as tf

    return {
        "llama": lambda: tf.LlamaConfig(**_COMMON, tie_word_embeddings=True),
        "qwen2": lambda: tf.Qwen2Config(**_COMMON, tie_word_embeddings=False),
        "mistral": lambda: tf.MistralConfig(**_COMMON, sliding_window=None),
        "phi3": lambda: tf.Phi3Config(**{**_COMMON, "num_key_value_heads": 4},
                                      original_max_position_embeddings=256),
    }


ARCHITECTURES = ("llama", "qwen2", "mistral", "phi3")


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer of ``VOCAB`` tokens trained on a little English text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from slimkit.llm.text import python_reference

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([python_reference("calibration").text[:20_000]], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL[0],
                                   eos_token=SPECIAL[2], pad_token=SPECIAL[0])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_causal_lm(arch: str = "llama", seed: int = 0) -> Any:
    """A random-init ``*ForCausalLM`` of architecture ``arch`` (see ``ARCHITECTURES``)."""
    import transformers as tf

    config = _configs()[arch]()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    config.architectures = [type(model).__name__]
    return model.eval()


def tiny_llama_folder(root: Path, arch: str = "llama", chat_template: bool = True,
                      seed: int = 0) -> Path:
    """Write a tiny ``arch`` model and its tokenizer as a Hugging Face folder under ``root``."""
    import transformers

    from slimkit.llm.load import quiet_progress

    folder = root / f"tiny-{arch}"
    model = tiny_causal_lm(arch, seed)
    with quiet_progress(transformers):
        model.save_pretrained(folder, safe_serialization=True)
    tokenizer = tiny_tokenizer()
    if not chat_template:
        tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    return folder
