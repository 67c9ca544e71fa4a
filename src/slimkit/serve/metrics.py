"""Server metrics: request counts by status, batch-size histogram, latency percentiles and the
share of sequence positions that were padding."""

from __future__ import annotations

import collections
import threading
from typing import Any

import numpy as np

LATENCY_WINDOW = 10_000  # percentiles over the most recent requests


class Metrics:
    """Thread-safe counters the handlers and the batcher update; ``snapshot()`` for /metrics.

    Example:
        >>> m = Metrics()
        >>> m.response(200, 0.004); m.batch(3, positions=24, padded_positions=30)
        >>> s = m.snapshot(); s["responses"], s["batch_sizes"], s["latency_ms"]["p50"]
        ({'200': 1}, {'3': 1}, 4.0)
        >>> s["padding_fraction"]
        0.2
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._responses: collections.Counter[int] = collections.Counter()
        self._batches: collections.Counter[int] = collections.Counter()
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._disconnects = 0
        self._positions = 0  # real sequence positions run (examples without a sequence: 1)
        self._padded = 0  # positions run, padding included

    def request(self) -> None:
        with self._lock:
            self._requests += 1

    def response(self, status: int, seconds: float | None = None) -> None:
        """A response was sent; ``seconds`` (successful predictions only) feeds the latencies."""
        with self._lock:
            self._responses[status] += 1
            if seconds is not None:
                self._latencies.append(seconds)

    def batch(self, examples: int, positions: int | None = None,
              padded_positions: int | None = None) -> None:
        """A forward pass ran ``examples``: ``positions`` real ones, ``padded_positions`` with
        the padding (both ``examples`` when left out)."""
        with self._lock:
            self._batches[examples] += 1
            self._positions += examples if positions is None else positions
            self._padded += examples if padded_positions is None else padded_positions

    def disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        with self._lock:
            lat = np.asarray(self._latencies) * 1e3
            batches = dict(sorted(self._batches.items()))
            out: dict[str, Any] = {
                "requests": self._requests,
                "responses": {str(k): v for k, v in sorted(self._responses.items())},
                "client_disconnects": self._disconnects,
                "batches": sum(batches.values()),
                "batch_sizes": {str(k): v for k, v in batches.items()},
                "padding_fraction": round(1.0 - self._positions / self._padded, 4)
                if self._padded else 0.0,
                "latency_ms": {"count": int(lat.size), **{
                    f"p{q}": round(float(np.percentile(lat, q)), 3) if lat.size else None
                    for q in (50, 90, 99)}},
            }
        return {**out, **extra}
