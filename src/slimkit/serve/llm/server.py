"""The OpenAI-compatible server of a causal LM: ``/v1/chat/completions``, ``/v1/completions``
and ``/v1/models`` over continuous batching, plus ``/health`` and ``/metrics``.

The HTTP side is the standard library's ``ThreadingHTTPServer`` (as in
:mod:`slimkit.serve.server`): each connection's thread checks its request, queues a
generation with the :class:`~slimkit.serve.llm.continuous.ContinuousBatcher` and turns the token
ids it gets back into text (streamed as server-sent events, or one JSON reply); see
:mod:`slimkit.serve.llm.handler`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from slimkit.serve.lifecycle import ServerLifecycle
from slimkit.serve.llm.config import LLMServeConfig
from slimkit.serve.llm.continuous import ContinuousBatcher
from slimkit.serve.llm.engine import DecodeEngine
from slimkit.serve.llm.load import CausalLM
from slimkit.serve.llm.openai_api import (
    COMPLETION_DEFAULT_MAX_TOKENS,
    CompletionRequest,
    OpenAIError,
    Reply,
    model_card,
)
from slimkit.serve.llm.sampling import SamplingParams
from slimkit.serve.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A checked request, ready to queue: its prompt ids, sampling and reply settings."""

    reply: Reply
    prompt: tuple[int, ...]
    params: SamplingParams
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


class LLMServer(ServerLifecycle):
    """Serve a causal LM with OpenAI's API; ``start()``/``stop()`` or ``with``.

    Args:
        engine: the decode engine (its sequences are batched continuously).
        tokenizer: a transformers tokenizer (encode, decode, chat template).
        config: address, batch policy and bounds.
        name: the model id clients send as ``model``.
        eos_token_ids: tokens that end a generation.

    Example:
        >>> import json, urllib.request
        >>> from slimkit.testing.tiny_lm import tiny_causal_lm
        >>> with LLMServer.for_torch(tiny_causal_lm(), LLMServeConfig(port=0)) as srv:
        ...     with urllib.request.urlopen(srv.url + "/v1/models") as r:
        ...         json.load(r)["data"][0]["id"]
        'tiny-llama'
    """

    def __init__(self, engine: DecodeEngine, tokenizer: Any, config: LLMServeConfig | None = None,
                 name: str = "model", eos_token_ids: tuple[int, ...] = ()) -> None:
        from slimkit.serve.llm.handler import LLMHandler, LLMHTTPServer

        self.engine, self.tokenizer = engine, tokenizer
        self.config = config or LLMServeConfig()
        self.name = self.config.model_name or name
        self.eos_token_ids = eos_token_ids
        self.created = int(time.time())
        self.metrics = Metrics()
        self.batcher = ContinuousBatcher(engine, self.config.policy, self.metrics)
        self.listen(LLMHTTPServer, LLMHandler, "slimkit-serve-llm-http")

    @classmethod
    def for_torch(cls, lm: CausalLM, config: LLMServeConfig | None = None) -> LLMServer:
        """A server of ``lm`` on the PyTorch engine (``config.threads`` threads)."""
        from slimkit.serve.llm.torch_engine import TorchDecodeEngine

        c = config or LLMServeConfig()
        pad = getattr(lm.tokenizer, "pad_token_id", None) or 0
        return cls(TorchDecodeEngine(lm.module, c.threads, pad), lm.tokenizer, c, lm.name,
                   lm.eos_token_ids)

    @classmethod
    def for_lm(cls, lm: CausalLM, config: LLMServeConfig | None = None) -> LLMServer:
        """A server of ``lm``: the PyTorch engine for a torch model (decode steps batched with
        padding), ``slimkit.llm``'s ONNX Runtime for an exported generation folder."""
        if lm.module is not None:
            return cls.for_torch(lm, config)
        from slimkit.errors import InputError
        from slimkit.llm.runtime import open_runtime
        from slimkit.serve.llm.runtime_engine import RuntimeDecodeEngine

        if lm.model is None:
            raise InputError(f"'{lm.name}' has neither a PyTorch module nor an exported model")
        c = config or LLMServeConfig()
        engine = RuntimeDecodeEngine(open_runtime(lm.model, "onnxruntime", c.threads))
        return cls(engine, lm.tokenizer, c, lm.name, lm.eos_token_ids)

    def _start_work(self) -> None:
        self.batcher.start()

    def _stop_work(self, deadline: float) -> None:
        self.batcher.stop(max(deadline - time.monotonic(), 0.1))
        self.wait_idle(time.monotonic() + 10)

    def prepare(self, request: CompletionRequest) -> Job:
        """The job for a checked request; OpenAIError where the model cannot serve it."""
        if request.model != self.name:
            raise OpenAIError(f"The model '{request.model}' does not exist; this server "
                              f"serves '{self.name}'", param="model", code="model_not_found",
                              status=404)
        prompt = self._prompt_ids(request)
        if request.truncate_prompt_tokens is not None:
            prompt = prompt[-request.truncate_prompt_tokens:]
        max_tokens = self._max_tokens(request, len(prompt))
        params = SamplingParams(max_tokens=max_tokens, temperature=request.temperature,
                                top_p=request.top_p, seed=request.seed,
                                stop_token_ids=self.eos_token_ids)
        return Job(Reply.new(request.chat, self.name), prompt, params, request.stop,
                   request.stream, request.include_usage)

    def _prompt_ids(self, request: CompletionRequest) -> tuple[int, ...]:
        tok = self.tokenizer
        if request.chat:
            if not getattr(tok, "chat_template", None):
                raise OpenAIError(f"model '{self.name}' has no chat template, so it cannot "
                                  "take chat messages; send a prompt to /v1/completions",
                                  param="messages", code="chat_template_missing")
            text = _render_chat(tok, list(request.messages))
            return tuple(tok(text, add_special_tokens=False)["input_ids"])
        if isinstance(request.prompt, tuple):
            vocab = len(tok)
            if max(request.prompt) >= vocab:
                raise OpenAIError(f"prompt token ids must be below the vocabulary size "
                                  f"{vocab}", param="prompt", code="invalid_value")
            return request.prompt
        return tuple(tok(request.prompt)["input_ids"])

    def _max_tokens(self, request: CompletionRequest, prompt: int) -> int:
        context = self.engine.context_length
        where = "messages" if request.chat else "prompt"
        wanted = request.max_tokens or (
            min(self.config.default_max_tokens, max(context - prompt, 1)) if request.chat
            else COMPLETION_DEFAULT_MAX_TOKENS)
        if prompt + wanted > context:
            raise OpenAIError(
                f"This model's maximum context length is {context} tokens. However, you "
                f"requested {prompt + wanted} tokens ({prompt} in the {where}, {wanted} in the "
                f"completion). Please reduce the length of the {where} or completion "
                "(or set truncate_prompt_tokens).", param=where,
                code="context_length_exceeded")
        return wanted

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [model_card(self.name, self.created)]}

    def health(self) -> tuple[int, dict[str, Any]]:
        draining = self.stopping.is_set()
        return (503 if draining else 200), {
            "status": "draining" if draining else "ok", "model": self.name,
            "running": self.batcher.snapshot()["running"]}

    def snapshot(self) -> dict[str, Any]:
        return self.metrics.snapshot(in_flight=self._in_flight, **self.batcher.snapshot())


def _render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    from jinja2 import TemplateError

    try:
        return str(tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True))
    except TemplateError as exc:
        raise OpenAIError(f"the model's chat template refused these messages: {exc}",
                          param="messages", code="invalid_value") from None
