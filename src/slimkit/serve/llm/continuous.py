"""Continuous batching: one thread runs every generation's decode steps together.

Batch policy (the knobs are :class:`BatchPolicy`):

- At most ``max_batch`` sequences decode together; more requests wait in a bounded queue
  (``max_queue``; beyond it, :class:`~slimkit.serve.batcher.QueueFull`), oldest first.
- Each iteration of the loop (1) drops the sequences that finished or whose client went away,
  (2) admits waiting requests while there is room, prefilling them as one batch of at most
  ``max_prefill_tokens`` padded prompt positions (the oldest one is always admitted, even a
  long prompt alone), and (3) runs one decode step for every sequence in the batch, the new
  ones included.
- So prefill of newcomers is interleaved with decoding: a running sequence waits at most one
  bounded prefill between two of its tokens, and a new request's first token comes after at
  most one decode step plus the prefills of the requests ahead of it (none while there is
  room). Prefill is compute-bound on a CPU already at one prompt, so batching several buys
  little; the budget caps how long the decoders stall. A smaller budget staggers a burst of
  newcomers: the first ones get their first token sooner, the last ones later (in
  ``benchmarks/bench_serve_llm.py``, 8 chat prompts at once: budget 128 lowered the median
  time to first token and raised its maximum against 512, at the same throughput).

A :class:`Generation` is the handle a request thread holds: it reads token ids, then one
:class:`Finish`, from ``next_event``; ``cancel()`` (a stop string, a client that went away)
frees its batch slot and cache at the next iteration.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from slimkit.errors import InputError
from slimkit.serve.batcher import QueueFull, Stopping
from slimkit.serve.llm.engine import DecodeEngine
from slimkit.serve.llm.sampling import SamplingParams, sample
from slimkit.serve.metrics import LATENCY_WINDOW, Metrics

logger = logging.getLogger(__name__)
_IDS = itertools.count(1)
REASONS = ("stop", "length", "cancelled", "error")
COUNTS = ("prefill_batches", "prompt_tokens", "generated_tokens",
          *(f"finished_{r}" for r in REASONS))


@dataclass(frozen=True)
class BatchPolicy:
    """How many sequences decode together and how much prefill may run between two steps.

    Example:
        >>> BatchPolicy(max_batch=8, max_prefill_tokens=512).max_batch
        8
    """

    max_batch: int = 16
    max_prefill_tokens: int = 512
    max_queue: int = 64

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_prefill_tokens", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")


class Finish(NamedTuple):
    """The last event of a generation: why it ended and how many tokens it generated (an
    end-of-sequence token counts, though it is not sent). Reasons: ``stop`` (end of sequence),
    ``length`` (max_tokens or the context), ``cancelled``, ``error``."""

    reason: str
    tokens: int


@dataclass(eq=False)
class Generation:
    """One request's generation, as its request thread sees it."""

    prompt: tuple[int, ...]
    params: SamplingParams
    id: int = field(default_factory=lambda: next(_IDS))
    submitted: float = field(default_factory=time.perf_counter)
    _events: queue.SimpleQueue[int | Finish] = field(default_factory=queue.SimpleQueue)
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def next_event(self, timeout: float) -> int | Finish | None:
        """The next token id, or the :class:`Finish`, or None after ``timeout`` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def cancel(self) -> None:
        """Stop generating; the scheduler frees the sequence at its next iteration."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


@dataclass(eq=False)
class _Running:
    generation: Generation
    rng: np.random.Generator
    last: int = -1
    count: int = 0


class ContinuousBatcher:
    """The scheduler thread: admits requests, prefills, decodes, streams tokens, frees slots.

    Example:
        >>> import transformers
        >>> from slimkit.serve.llm.torch_engine import TorchDecodeEngine
        >>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, num_key_value_heads=1, intermediate_size=32)
        >>> b = ContinuousBatcher(TorchDecodeEngine(transformers.LlamaForCausalLM(cfg)))
        >>> g = b.start().submit([1, 2, 3], SamplingParams(max_tokens=4, temperature=0))
        >>> events = [g.next_event(10) for _ in range(5)]
        >>> events[-1]
        Finish(reason='length', tokens=4)
        >>> b.stop()
    """

    def __init__(self, engine: DecodeEngine, policy: BatchPolicy | None = None,
                 metrics: Metrics | None = None) -> None:
        self.engine = engine
        self.policy = policy or BatchPolicy()
        self.metrics = metrics or Metrics()
        self._waiting: collections.deque[Generation] = collections.deque()
        self._running: dict[int, _Running] = {}
        self._wake = threading.Condition()
        self._accepting = True  # requests may queue before start()
        self._stopping = False
        self._abort = False
        self._cached = 0
        self._stats = threading.Lock()  # the TTFT window is read by /metrics
        self._ttft: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._counts = dict.fromkeys(COUNTS, 0)  # fixed keys: read while updated
        self._thread = threading.Thread(target=self._loop, name="slimkit-serve-decoder",
                                        daemon=True)

    # request threads ---------------------------------------------------------------------

    def start(self) -> ContinuousBatcher:
        self._thread.start()
        return self

    def submit(self, prompt: list[int] | tuple[int, ...], params: SamplingParams) -> Generation:
        """Queue a generation. Raises QueueFull or Stopping."""
        generation = Generation(tuple(prompt), params)
        with self._wake:
            if not self._accepting:
                raise Stopping("the server is shutting down")
            if len(self._waiting) >= self.policy.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting already (the "
                                "queue's bound); retry later")
            self._waiting.append(generation)
            self._wake.notify()
        return generation

    def stop(self, timeout: float = 30.0) -> None:
        """Take no new requests; finish the queued and running ones within ``timeout``
        seconds, then cancel what is left."""
        with self._wake:
            self._accepting, self._stopping = False, True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort = True
            self._thread.join(10.0)

    def snapshot(self) -> dict[str, Any]:
        """Scheduler figures for /metrics."""
        with self._stats:
            ttft = np.asarray(self._ttft) * 1e3
        return {"running": len(self._running), "waiting": len(self._waiting),
                "cached_tokens": self._cached, "max_batch": self.policy.max_batch,
                "max_prefill_tokens": self.policy.max_prefill_tokens, **dict(self._counts),
                "ttft_ms": {"count": int(ttft.size), **{
                    f"p{q}": round(float(np.percentile(ttft, q)), 3) if ttft.size else None
                    for q in (50, 90, 99)}}}

    # the scheduler thread -----------------------------------------------------------------

    def _loop(self) -> None:
        with self.engine.pinned():
            while True:
                with self._wake:
                    while not (self._waiting or self._running or self._stopping):
                        self._wake.wait()
                    if self._stopping and not (self._waiting or self._running):
                        return
                    admitted = self._admit()
                self._reap()
                if admitted:
                    self._prefill(admitted)
                if self._running:
                    self._decode()
                self._cached = self.engine.cached_tokens()

    def _admit(self) -> list[Generation]:
        """The waiting generations that join the batch now (called holding the lock)."""
        taken: list[Generation] = []
        longest = 0
        while self._waiting and len(self._running) + len(taken) < self.policy.max_batch:
            g = self._waiting[0]
            if g.cancelled or self._abort:
                self._end(self._waiting.popleft(), "cancelled", 0)
                continue
            padded = max(longest, len(g.prompt)) * (len(taken) + 1)
            if taken and padded > self.policy.max_prefill_tokens:
                break
            taken.append(self._waiting.popleft())
            longest = max(longest, len(g.prompt))
        return taken

    def _reap(self) -> None:
        for run in [r for r in self._running.values() if r.generation.cancelled or self._abort]:
            self._finish(run, "cancelled")

    def _prefill(self, admitted: list[Generation]) -> None:
        try:
            logits = self.engine.prefill({g.id: g.prompt for g in admitted})
        except Exception:
            logger.exception("prefill of %d sequences failed", len(admitted))
            for g in admitted:
                self.engine.drop(g.id)
                self._end(g, "error", 0)
            return
        self._counts["prefill_batches"] += 1
        self._counts["prompt_tokens"] += sum(len(g.prompt) for g in admitted)
        now = time.perf_counter()
        for g, row in zip(admitted, logits, strict=True):
            run = _Running(g, g.params.generator())
            self._running[g.id] = run
            with self._stats:
                self._ttft.append(now - g.submitted)
            self._emit(run, row)

    def _decode(self) -> None:
        runs = list(self._running.values())
        try:
            logits = self.engine.decode({r.generation.id: r.last for r in runs})
        except Exception:
            logger.exception("decode step of %d sequences failed", len(runs))
            for run in runs:
                self._finish(run, "error")
            return
        self.metrics.batch(len(runs))
        for run, row in zip(runs, logits, strict=True):
            self._emit(run, row)

    def _emit(self, run: _Running, logits: np.ndarray) -> None:
        """Sample the next token of ``run``, send it, finish the sequence when it is done."""
        g = run.generation
        token = sample(logits, g.params, run.rng)
        run.count += 1
        self._counts["generated_tokens"] += 1
        if token in g.params.stop_token_ids:
            self._finish(run, "stop")
            return
        g._events.put(token)
        run.last = token
        if run.count >= g.params.max_tokens or \
                len(g.prompt) + run.count >= self.engine.context_length:
            self._finish(run, "length")

    def _finish(self, run: _Running, reason: str) -> None:
        g = run.generation
        self._running.pop(g.id, None)
        self.engine.drop(g.id)
        self._cached = self.engine.cached_tokens()  # before the client hears of the end
        self._end(g, reason, run.count)

    def _end(self, g: Generation, reason: str, tokens: int) -> None:
        self._counts[f"finished_{reason}"] += 1
        g._events.put(Finish(reason, tokens))
