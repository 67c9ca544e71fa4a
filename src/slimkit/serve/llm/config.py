"""The options of ``slimkit serve`` for a causal LM: address, batch policy, bounds."""

from __future__ import annotations

from dataclasses import dataclass

from slimkit.errors import InputError
from slimkit.serve.llm.continuous import BatchPolicy


@dataclass(frozen=True)
class LLMServeConfig:
    """How the OpenAI-compatible server listens, batches and bounds its work.

    ``max_batch`` sequences decode together (continuous batching); a newcomer's prompt is
    prefilled between two decode steps, with at most ``max_prefill_tokens`` padded prompt
    positions per step (see :mod:`slimkit.serve.llm.continuous`). ``max_queue`` requests wait at
    most (beyond: 503). A chat request without ``max_tokens`` generates up to
    ``default_max_tokens`` (and never past the context). A request that gets no new token
    for ``request_timeout_s`` seconds is cancelled (504). ``threads``: intra-op threads of
    the engine.

    Example:
        >>> LLMServeConfig(port=0, max_batch=8).policy.max_batch
        8
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 16
    max_prefill_tokens: int = 512
    max_queue: int = 64
    max_body_bytes: int = 4 * 2**20
    request_timeout_s: float = 60.0
    default_max_tokens: int = 512
    threads: int = 1
    model_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "default_max_tokens", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be in 0..65535 (0: any free port), got {self.port}")
        if not self.request_timeout_s > 0:
            raise InputError(f"request_timeout_s must be > 0, got {self.request_timeout_s!r}")
        self.policy  # noqa: B018  (checks max_batch, max_prefill_tokens, max_queue)

    @property
    def policy(self) -> BatchPolicy:
        return BatchPolicy(self.max_batch, self.max_prefill_tokens, self.max_queue)
