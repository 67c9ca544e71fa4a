"""The options of ``slimkit serve``: address, dynamic batching, bounds and the runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

from slimkit.errors import InputError
from slimkit.runtime.base import RuntimeOptions


@dataclass(frozen=True)
class ServeConfig:
    """How the inference server listens, batches and bounds its work.

    ``max_batch`` examples at most go into one forward pass; the batcher waits up to
    ``max_wait_ms`` after the first queued request for more to join (``max_batch=1`` or
    ``max_wait_ms=0`` turns dynamic batching off). ``max_queue`` bounds the requests waiting:
    beyond it the server answers 503 at once. A body over ``max_body_bytes`` gets 413 unread.
    Requests batch when their per-example shapes are equal. For a model with an
    ``attention_mask``, ``max_padding > 0`` lets requests of different sequence lengths share
    a batch padded to the longest, while padding stays within that share of its positions.
    Off by default: on the 2-core CPU of ``benchmarks/bench_serve.py`` (MiniLM, short queries)
    padded positions cost more than the larger batches save; it pays where a forward pass has
    a large fixed cost (many cores, GPUs).

    Example:
        >>> ServeConfig(max_batch=16, max_wait_ms=2).batching
        True
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_body_bytes: int = 16 * 2**20
    request_timeout_s: float = 30.0
    max_padding: float = 0.0
    runtime: str = "onnxruntime"
    options: RuntimeOptions = field(default_factory=RuntimeOptions)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be in 0..65535 (0: any free port), got {self.port}")
        if not self.max_wait_ms >= 0 or not self.request_timeout_s > 0:
            raise InputError("max_wait_ms must be >= 0 and request_timeout_s > 0")
        if not 0 <= self.max_padding < 1:
            raise InputError(f"max_padding must be in [0, 1), got {self.max_padding!r}")

    @property
    def batching(self) -> bool:
        return self.max_batch > 1 and self.max_wait_ms > 0
