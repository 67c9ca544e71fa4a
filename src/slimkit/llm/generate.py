"""``generate``: a prompt (plain or through the model's chat template) in, text out, streamed
token by token, on PyTorch or ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimkit.errors import InputError
from slimkit.llm.engine import Engine
from slimkit.llm.runtime import open_runtime
from slimkit.llm.sampling import SamplingConfig
from slimkit.model import Model


@dataclass(frozen=True)
class GenerationConfig:
    """One generation: ``chat`` wraps the prompt in the model's chat template; ``truncate``
    keeps the last tokens of a prompt too long for the context instead of refusing it."""

    max_new_tokens: int = 128
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    chat: bool = False
    truncate: bool = False
    system: str | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    new_tokens: list[int]
    finish_reason: str
    runtime: str
    time_to_first_token_s: float
    decode_tokens_per_s: float | None  # median over the steps after the first token
    truncated_prompt: bool

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "prompt_tokens": self.prompt_tokens,
                "new_tokens": len(self.new_tokens), "finish_reason": self.finish_reason,
                "runtime": self.runtime,
                "time_to_first_token_ms": round(self.time_to_first_token_s * 1000, 1),
                "decode_tokens_per_s": self.decode_tokens_per_s,
                "truncated_prompt": self.truncated_prompt}


def generate(model: Model, prompt: str, config: GenerationConfig | None = None, *,
             runtime: str | None = None, threads: int | None = None,
             on_text: Callable[[str], None] | None = None) -> GenerationResult:
    """Generate a continuation of ``prompt``; ``on_text`` receives each new piece of text as
    soon as its tokens decode to complete characters.

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> m = load_causal_lm(tiny_llama_folder(pathlib.Path(tempfile.mkdtemp())))
        >>> r = generate(m, "The while statement", GenerationConfig(max_new_tokens=5))
        >>> len(r.new_tokens) <= 5, r.runtime
        (True, 'torch')
    """
    config = config or GenerationConfig()
    tokenizer = require_tokenizer(model)
    rt = open_runtime(model, runtime, threads)
    ids = encode_prompt(tokenizer, prompt, config.chat, config.system)
    ids, truncated = fit_context(ids, rt.context_length, config.truncate)
    engine = Engine(rt, stop_token_ids(model))
    state = engine.start(ids, config.max_new_tokens, config.sampling)
    streamer = TextStreamer(tokenizer)
    for token in engine.drain(state):
        piece = streamer.push(token)
        if piece and on_text is not None:
            on_text(piece)
    tail = streamer.flush()
    if tail and on_text is not None:
        on_text(tail)
    rate = 1.0 / float(np.median(state.step_s)) if state.step_s else None
    return GenerationResult(streamer.text, len(ids), state.new_tokens,
                            state.finish_reason or "length", rt.name, state.first_token_s,
                            None if rate is None else round(rate, 2), truncated)


def require_tokenizer(model: Model) -> Any:
    if model.tokenizer is None:
        raise InputError(f"'{model.source}' has no tokenizer (tokenizer.json); generation "
                         "from text needs one")
    return model.tokenizer


def encode_prompt(tokenizer: Any, prompt: str, chat: bool, system: str | None = None) -> list[int]:
    """Token ids of ``prompt``, through the chat template when ``chat``."""
    if not prompt:
        raise InputError("the prompt is empty")
    if not chat:
        return list(tokenizer(prompt)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("this model has no chat template, so --chat cannot format a "
                         "conversation; drop --chat to send the prompt as plain text")
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_context(ids: list[int], context: int, truncate: bool) -> tuple[list[int], bool]:
    """``ids`` if at least one new token fits the context; else its last ``context - 1``
    tokens when ``truncate``, or an error saying by how much it is too long."""
    if len(ids) < context:
        return ids, False
    if not truncate:
        raise InputError(f"the prompt has {len(ids)} tokens but the model's context is "
                         f"{context} tokens (room is needed for new ones); shorten it or pass "
                         "--truncate to keep its last tokens")
    return ids[-(context - 1):], True


def stop_token_ids(model: Model) -> list[int]:
    """End-of-sequence ids from the generation config, the GenAI config or the tokenizer."""
    ids: list[Any] = []
    module = model.module
    hf = getattr(module, "model", None)
    generation = getattr(hf, "generation_config", None)
    ids.append(getattr(generation, "eos_token_id", None))
    ids.append(model.meta.get("genai_config", {}).get("model", {}).get("eos_token_id"))
    ids.append(getattr(model.tokenizer, "eos_token_id", None))
    flat: list[int] = []
    for item in ids:
        flat += [int(i) for i in (item if isinstance(item, list) else [item]) if i is not None]
    return sorted(set(flat))


class TextStreamer:
    """Turns a token stream into text pieces, holding back bytes of a character not yet
    complete (byte-level BPE splits multi-byte characters across tokens)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.sent = 0
        self.text = ""

    def push(self, token: int) -> str:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        return self._emit(text)

    def flush(self) -> str:
        return self._emit(self.tokenizer.decode(self.tokens, skip_special_tokens=True))

    def _emit(self, text: str) -> str:
        piece = text[self.sent:]
        self.sent = len(text)
        self.text = text
        return piece
