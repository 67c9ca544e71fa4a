"""Dynamic batching: requests wait in a bounded queue; one thread runs them in batches.

The batcher takes the oldest request, then waits up to ``max_wait_ms`` for more whose inputs
have the same per-example shapes, up to ``max_batch`` examples, and runs them as one forward
pass (a request larger than ``max_batch`` runs alone). Outputs are cut back per request along
the batch axis. With a :class:`~slimkit.serve.padding.SequencePadding` plan, requests whose
sequences differ in length batch too: padded to the longest, as long as padding stays within
the plan's ``max_padding`` share of the batch's positions; the batch then takes, from what is
waiting, the requests closest in length to the oldest one (the least padding). A request that
does not fit the batch (another shape, too much padding) is held, in arrival order, for the
next one, so nothing is lost and the oldest request always starts the next batch. The wait is
only for a batch that holds every waiting request: with requests of another shape waiting, the
batch runs at once (under load, idling for stragglers cost up to a third of the throughput
gain of batching in ``benchmarks/bench_serve.py``). ``stop()`` refuses new requests, finishes
every queued one, then ends the thread.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from slimkit.runtime.base import Session
from slimkit.serve.metrics import Metrics
from slimkit.serve.padding import SequencePadding

logger = logging.getLogger(__name__)
Outputs = list[np.ndarray]
_ARRIVAL = itertools.count()


class QueueFull(RuntimeError):
    """The request queue is at ``max_queue``: the server answers 503."""


class Stopping(RuntimeError):
    """The server is shutting down and takes no new requests: 503."""


@dataclass
class Request:
    inputs: dict[str, np.ndarray]
    key: tuple[tuple[str, tuple[int, ...]], ...]  # requests with equal keys can batch
    length: int = 1  # sequence length (1 without padding)
    future: Future[Outputs] = field(default_factory=Future)
    seq: int = field(default_factory=lambda: next(_ARRIVAL))  # arrival order

    @property
    def size(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    @property
    def positions(self) -> int:
        return self.size * self.length


class Batcher:
    """One thread that owns the session and runs queued requests in batches.

    Example:
        >>> from slimkit.runtime import create_session
        >>> from slimkit.testing import tiny_model
        >>> b = Batcher(create_session(tiny_model(), "torch"), 8, 1.0, 16, Metrics())
        >>> b.start(); f = b.submit({"input": np.zeros((2, 8), np.float32)})
        >>> f.result(timeout=10)[0].shape
        (2, 4)
        >>> b.stop()
    """

    def __init__(self, session: Session, max_batch: int, max_wait_ms: float, max_queue: int,
                 metrics: Metrics, padding: SequencePadding | None = None) -> None:
        self.session = session
        self.padding = padding
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1e3
        self.metrics = metrics
        self._queue: queue.Queue[Request | None] = queue.Queue(maxsize=max_queue)
        self._held: collections.deque[Request] = collections.deque()  # in arrival order
        self._stop_seen = False
        self._accepting = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="slimkit-serve-batcher",
                                        daemon=True)

    @property
    def depth(self) -> int:
        return self._queue.qsize() + len(self._held)

    def start(self) -> None:
        self._accepting.set()
        self._thread.start()

    def submit(self, inputs: dict[str, np.ndarray]) -> Future[Outputs]:
        """Queue a request; its future gives the outputs. Raises QueueFull or Stopping."""
        if not self._accepting.is_set():
            raise Stopping("the server is shutting down")
        p = self.padding
        request = Request(inputs, p.key(inputs), p.length(inputs)) if p is not None else \
            Request(inputs, tuple((k, v.shape[1:]) for k, v in sorted(inputs.items())))
        try:
            if self.depth >= self._queue.maxsize:  # held-back requests count too
                raise queue.Full
            self._queue.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"the request queue is full ({self._queue.maxsize} waiting); "
                            "retry later") from None
        return request.future

    def stop(self, timeout: float | None = None) -> None:
        """Take no new requests, finish the queued ones, end the thread."""
        self._accepting.clear()
        if self._thread.is_alive():
            self._queue.put(None)  # after every queued request: they finish first
            self._thread.join(timeout)

    def _loop(self) -> None:
        with self.session.pinned():
            while (batch := self._next_batch()) is not None:
                self._run(batch)
            while True:  # a request that slipped in next to the stop mark still gets run
                try:
                    late = self._queue.get_nowait()
                except queue.Empty:
                    break
                if late is not None:
                    self._run([late])

    def _take(self, timeout: float | None) -> Request | None:
        """The next request (held ones first); None after ``timeout`` (0: do not wait) or once
        the stop mark was read (``_stop_seen``)."""
        if self._held:
            return self._held.popleft()
        if self._stop_seen:
            return None
        try:
            item = self._queue.get_nowait() if timeout == 0 else self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            self._stop_seen = True
        return item

    def _next_batch(self) -> list[Request] | None:
        first = self._take(None)
        while first is not None and first.future.cancelled():
            first = self._take(None)
        if first is None:  # the stop mark, nothing held
            return None
        same, other = self._gather(first)
        batch, size = [first], first.size
        positions, longest = first.positions, first.length
        rest = other
        # closest lengths first: the least padding (equal lengths keep their arrival order)
        for r in sorted(same, key=lambda r: (abs(r.length - first.length), r.seq)):
            if size + r.size > self.max_batch or (self.padding is not None and not
                                                  self.padding.fits(positions + r.positions,
                                                                    size + r.size,
                                                                    max(longest, r.length))):
                rest.append(r)
                continue
            batch.append(r)
            size += r.size
            positions += r.positions
            longest = max(longest, r.length)
        if rest:
            self._held = collections.deque(sorted([*rest, *self._held], key=lambda r: r.seq))
        return batch

    def _gather(self, first: Request) -> tuple[list[Request], list[Request]]:
        """Requests that could join ``first``'s batch (same key), and the others.

        Takes whatever waits already (up to ``2 * max_batch``, to choose lengths from); then
        waits up to ``max_wait`` for more only while the batch has room and every waiting
        request is in it: the batcher never idles while a request it cannot take waits."""
        same: list[Request] = []
        other: list[Request] = []
        room = self.max_batch - first.size
        deadline = time.monotonic() + self.max_wait
        while room > 0:
            while len(same) + len(other) < 2 * self.max_batch and \
                    (nxt := self._take(0)) is not None:
                (same if nxt.key == first.key else other).append(nxt)
            left = deadline - time.monotonic()
            if other or self._stop_seen or left <= 0 or sum(r.size for r in same) >= room:
                break
            nxt = self._take(left)
            if nxt is not None:
                (same if nxt.key == first.key else other).append(nxt)
        return same, other

    def _run(self, batch: list[Request]) -> None:
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        joined = self._join(live)
        total = sum(r.size for r in live)
        try:
            outputs = self.session.run(joined)
        except Exception as exc:  # the model failed on a checked input: each request learns it
            logger.warning("batch of %d examples failed: %s", total, exc)
            for r in live:
                r.future.set_exception(exc)
            return
        if len(live) > 1 and any(o.ndim == 0 or o.shape[0] != total for o in outputs):
            self._unbatchable(live)
            return
        longest = max(r.length for r in live)
        self.metrics.batch(total, sum(r.positions for r in live), total * longest)
        start = 0
        for r in live:
            r.future.set_result(outputs if len(live) == 1 else self._cut(outputs, start, r))
            start += r.size

    def _join(self, live: list[Request]) -> dict[str, np.ndarray]:
        if len(live) == 1:
            return live[0].inputs
        if self.padding is not None:
            return self.padding.join([r.inputs for r in live])
        return {n: np.concatenate([r.inputs[n] for r in live]) for n in live[0].inputs}

    def _cut(self, outputs: Outputs, start: int, r: Request) -> Outputs:
        if self.padding is not None:
            return self.padding.cut(outputs, start, r.size, r.length)
        return [o[start:start + r.size] for o in outputs]

    def _unbatchable(self, live: list[Request]) -> None:
        """Outputs without a batch axis cannot be cut per request: run each request alone."""
        logger.warning("model outputs have no leading batch axis; running requests one by one")
        self.max_batch = 1
        for r in live:
            try:
                r.future.set_result(self.session.run(r.inputs))
            except Exception as exc:
                r.future.set_exception(exc)
            self.metrics.batch(r.size, r.positions, r.positions)
