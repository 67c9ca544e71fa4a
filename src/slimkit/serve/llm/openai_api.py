"""The OpenAI-compatible request and response shapes of ``/v1/completions`` and
``/v1/chat/completions``: checking a request body, and building replies and stream chunks.

Requests are checked field by field against what OpenAI's API accepts; a field this server does
not support with a non-default value (``n`` > 1, tools, logprobs, penalties) and an unknown
field get HTTP 400 with OpenAI's error shape ``{"error": {"message", "type", "param",
"code"}}``, so the ``openai`` client raises ``BadRequestError`` with the message. One extension
(from vLLM): ``truncate_prompt_tokens`` keeps only the last N prompt tokens.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP = 4  # stop strings per request (OpenAI's limit)
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class OpenAIError(Exception):
    """An error reply in OpenAI's shape; ``status`` is its HTTP status.

    Example:
        >>> OpenAIError("bad", param="n").body()["error"]["param"]
        'n'
    """

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int = 400, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.kind = \
            message, param, code, status, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


@dataclass(frozen=True)
class CompletionRequest:
    """A checked request: ``messages`` (chat) or ``prompt`` (a string or token ids)."""

    chat: bool
    model: str
    messages: tuple[dict[str, str], ...] = ()
    prompt: str | tuple[int, ...] = ""
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    truncate_prompt_tokens: int | None = None


# field checkers: (value, name) -> the value to keep, or OpenAIError ------------------------

def _fail(name: str, rule: str) -> OpenAIError:
    return OpenAIError(f"'{name}' {rule}", param=name, code="invalid_value")


def _int(low: int) -> Callable[[Any, str], int | None]:
    def check(v: Any, name: str) -> int | None:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise _fail(name, f"must be an integer >= {low}, got {v!r}")
        return v
    return check


def _number(low: float, high: float, low_open: bool = False) -> Callable[[Any, str], Any]:
    def check(v: Any, name: str) -> float | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high \
                or (low_open and v == low):
            side = "(" if low_open else "["
            raise _fail(name, f"must be a number in {side}{low:g}, {high:g}], got {v!r}")
        return float(v)
    return check


def _only(*allowed: Any) -> Callable[[Any, str], None]:
    """A field accepted only at its default values (the feature is not supported)."""
    def check(v: Any, name: str) -> None:
        if v not in allowed:
            raise OpenAIError(f"'{name}' is not supported by this server (only "
                              f"{' or '.join(json.dumps(a) for a in allowed)})", param=name,
                              code="unsupported_value")
    return check


def _stop(v: Any, name: str) -> tuple[str, ...]:
    stops = [v] if isinstance(v, str) else [] if v is None else v
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) \
            or len(stops) > MAX_STOP:
        raise _fail(name, f"must be a string or a list of at most {MAX_STOP} strings")
    return tuple(s for s in stops if s)


def _bool(v: Any, name: str) -> bool:
    if v is not None and not isinstance(v, bool):
        raise _fail(name, f"must be true or false, got {v!r}")
    return bool(v)


def _stream_options(v: Any, name: str) -> bool:
    if v is None:
        return False
    if not isinstance(v, dict) or set(v) - {"include_usage"}:
        raise _fail(name, 'must be an object {"include_usage": true|false}')
    return _bool(v.get("include_usage"), "stream_options.include_usage")


def _string(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise _fail(name, f"must be a string, got {v!r}")
    return v


def _ignored(v: Any, name: str) -> None:
    return None


def _messages(v: Any, name: str) -> tuple[dict[str, str], ...]:
    if not isinstance(v, list) or not v:
        raise _fail(name, "must be a non-empty list of {\"role\", \"content\"} objects")
    return tuple(_message(m, f"{name}[{i}]") for i, m in enumerate(v))


def _message(m: Any, name: str) -> dict[str, str]:
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise _fail(name, f"must be an object with a role among {sorted(ROLES)}")
    content = m.get("content")
    if isinstance(content, list):  # content parts: text only
        if not all(isinstance(p, dict) and p.get("type") == "text"
                   and isinstance(p.get("text"), str) for p in content):
            raise OpenAIError(f"'{name}.content' may hold text parts only (this model reads "
                              "text)", param=f"{name}.content", code="unsupported_value")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise _fail(f"{name}.content", "must be a string or a list of text parts")
    return {"role": ROLES[m["role"]], "content": content}


def _prompt(v: Any, name: str) -> str | tuple[int, ...]:
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str | list):
        v = v[0]  # one prompt in a list (n = 1 prompt per request)
    if isinstance(v, str) and v:
        return v
    if isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool)
                                         and t >= 0 for t in v):
        return tuple(v)
    raise _fail(name, "must be one non-empty string or one non-empty list of token ids (this "
                      "server takes one prompt per request)")


COMMON: dict[str, Callable[[Any, str], Any]] = {
    "model": _string, "max_tokens": _int(1), "temperature": _number(0, 2),
    "top_p": _number(0, 1, low_open=True), "seed": _int(0), "stop": _stop,
    "stream": _bool, "stream_options": _stream_options, "n": _only(None, 1),
    "presence_penalty": _only(None, 0, 0.0), "frequency_penalty": _only(None, 0, 0.0),
    "logit_bias": _only(None, {}), "user": _ignored, "truncate_prompt_tokens": _int(1),
}
CHAT = {**COMMON, "messages": _messages, "max_completion_tokens": _int(1),
        "logprobs": _only(None, False), "top_logprobs": _only(None, 0),
        "tools": _only(None, []), "tool_choice": _only(None, "none"),
        "parallel_tool_calls": _ignored, "response_format": _only(None, {"type": "text"})}
TEXT = {**COMMON, "prompt": _prompt, "logprobs": _only(None, 0), "echo": _only(None, False),
        "suffix": _only(None, ""), "best_of": _only(None, 1)}


def parse_request(body: bytes, chat: bool) -> CompletionRequest:
    """The checked request in ``body``; OpenAIError (400) for anything it cannot serve.

    Example:
        >>> parse_request(b'{"model": "m", "prompt": "Hi", "stop": "."}', chat=False).stop
        ('.',)
    """
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OpenAIError("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError("the body must be a JSON object", code="invalid_json")
    fields = CHAT if chat else TEXT
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise OpenAIError(f"Unrecognized request argument supplied: {unknown[0]}",
                          param=unknown[0], code="unrecognized_argument")
    required = ("model", "messages" if chat else "prompt")
    for name in required:
        if name not in data:
            raise OpenAIError(f"'{name}' is a required property", param=name,
                              code="missing_required_parameter")
    v = {name: check(data.get(name), name) for name, check in fields.items()}
    if v["stream_options"] and not v["stream"]:
        raise _fail("stream_options", "is allowed only with stream: true")
    return CompletionRequest(
        chat=chat, model=v["model"], messages=v.get("messages") or (),
        prompt=v.get("prompt") or "", max_tokens=v.get("max_completion_tokens") or
        v["max_tokens"], temperature=1.0 if v["temperature"] is None else v["temperature"],
        top_p=1.0 if v["top_p"] is None else v["top_p"], seed=v["seed"], stop=v["stop"],
        stream=v["stream"], include_usage=v["stream_options"],
        truncate_prompt_tokens=v["truncate_prompt_tokens"])


# replies ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """The fixed part of every reply to one request (id, timestamps, model)."""

    chat: bool
    model: str
    id: str
    created: int

    @classmethod
    def new(cls, chat: bool, model: str) -> Reply:
        prefix = "chatcmpl" if chat else "cmpl"
        return cls(chat, model, f"{prefix}-{uuid.uuid4().hex}", int(time.time()))

    def _head(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + \
            (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def complete(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        """The body of a non-streamed reply."""
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish_reason}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {**self._head(False), "choices": [choice], "usage": usage}

    def chunk(self, text: str | None, finish_reason: str | None = None,
              first: bool = False) -> dict[str, Any]:
        """One streamed chunk: new ``text``, or the last one with ``finish_reason``."""
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish_reason}
        if self.chat:
            delta = {"role": "assistant"} if first else {}
            choice["delta"] = {**delta, "content": text} if text is not None else delta
        else:
            choice["text"] = text or ""
        return {**self._head(True), "choices": [choice]}

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        """The chunk after the last one when the client asked for usage in the stream."""
        return {**self._head(True), "choices": [], "usage": usage}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` (or ``data: [DONE]``) and a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "slimkit"}
