"""Data parallelism over worker processes: assign shards to workers and coordinate the results.

Each worker is a process (``spawn`` or ``forkserver``, never ``fork``: torch and ONNX Runtime
thread pools do not survive a fork) with its thread counts pinned, holding one runtime session
on the model *spec*. The parent sends each shard to the least-loaded worker, keeps at most
``workers x in_flight_per_worker`` shards between the input and the in-order output (so memory
stays bounded and a slow consumer slows the input: back-pressure), and merges results in input
order. Every wait is on the workers' result pipes *and* their process sentinels, with a
deadline, so a crash or a hang becomes an error naming the worker and the shard, never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from slimkit.data import Dataset
from slimkit.errors import DataError, InputError
from slimkit.parallel import assign
from slimkit.parallel.assign import Sent, WorkerHandle
from slimkit.parallel.errors import WorkerCrashedError, WorkerError, WorkerTimeoutError
from slimkit.parallel.options import AdvancedParallelOptions, check_runtime, positive_int
from slimkit.parallel.shards import (
    InOrder,
    Shard,
    as_dataset,
    check_shard_size,
    merge,
    shards_of,
    split,
)
from slimkit.parallel.spec import ModelSpec, as_spec, prepare

if TYPE_CHECKING:
    from slimkit.model import Model

logger = logging.getLogger(__name__)
E = TypeVar("E", bound=WorkerError)
STOP_GRACE_S = 5.0  # close(): how long idle workers get to exit before they are terminated


class DataParallel:
    """Run a model on many examples in several worker processes; outputs in input order.

    Args:
        model: a model spec (``builtin:NAME``, ``package.module:factory``, an ``.onnx`` file),
            a :class:`ModelSpec` (spec with weights / input shape / seed) or a ``Model``.
            Workers receive the spec, never a pickled module; a torch model run on ONNX
            Runtime is exported once, here, and every worker opens that file.
        runtime: a runtime of ``slimkit.runtime`` (``torch``, ``onnxruntime``).
        workers: worker processes (more than the cores is allowed, with a warning).
        threads_per_worker: intra-op threads of each worker's session.
        advanced: start method, in-flight depth, timeouts, core pinning, runtime options.

    Workers start with ``spawn`` by default, which re-imports the caller's main module: a script
    must guard its entry point with ``if __name__ == "__main__":``. A torch-runtime worker
    imports torch (seconds per worker on a small CPU); an ONNX Runtime worker does not.

    Example:
        >>> from slimkit.data import Dataset
        >>> x = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)
        >>> with DataParallel("slimkit.testing:tiny_mlp", runtime="onnxruntime", workers=2) as dp:
        ...     outputs = dp.run(Dataset({"input": x}), batch_size=4)
        >>> outputs[0].shape
        (10, 4)
    """

    def __init__(self, model: str | os.PathLike[str] | ModelSpec | Model, runtime: str = "torch",
                 workers: int = 2, threads_per_worker: int = 1,
                 advanced: AdvancedParallelOptions | None = None) -> None:
        self.advanced = advanced or AdvancedParallelOptions()
        self.workers = positive_int(workers, "workers")
        self.options = replace(self.advanced.runtime_options,
                               threads=positive_int(threads_per_worker, "threads_per_worker"))
        self.runtime = check_runtime(runtime)
        self.spec: ModelSpec = as_spec(model)[0]  # replaced by the exported file on ONNX runtimes
        self.output_names: tuple[str, ...] = ()
        self._model = model
        self._pool: list[WorkerHandle] = []
        self._state = "new"  # -> "open" -> "closed"
        self._busy = False
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
        assign.warn_if_oversubscribed(self.workers, self.options.threads)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> DataParallel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> DataParallel:
        """Start the workers and wait until each has opened its session."""
        if self._state == "open":
            return self
        self._require_not_closed()
        self._tmp = tempfile.TemporaryDirectory(prefix="slimkit-parallel-")
        try:
            self.spec, expected = prepare(self._model, self.runtime, Path(self._tmp.name))
            self._spawn()
            self._state = "open"
            self._await_ready(expected)
        except BaseException:
            self._abort()
            raise
        logger.info("started %d %s workers x %d threads on %s", self.workers, self.runtime,
                    self.options.threads, self.spec.spec)
        return self

    def close(self) -> None:
        """Stop the workers (idle ones exit at once; stragglers are terminated) and clean up."""
        if self._state == "closed":
            return
        if any(w.in_flight for w in self._pool):
            self._abort()  # closed in the middle of a run: nothing to wait for
            return
        for w in self._pool:
            with contextlib.suppress(OSError):
                w.tasks.send(None)
        deadline = time.monotonic() + STOP_GRACE_S
        for w in self._pool:
            w.process.join(max(0.0, deadline - time.monotonic()))
        self._abort()

    @property
    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._pool if w.process.pid is not None]

    def stats(self) -> list[dict[str, Any]]:
        """Per worker: pid, shards done and seconds spent computing them."""
        return [{"worker": w.id, "pid": w.pid, "shards": w.shards,
                 "busy_seconds": round(w.busy_seconds, 4)} for w in self._pool]

    def describe(self) -> dict[str, Any]:
        return {"model": self.spec.to_dict(), "runtime": self.runtime, "workers": self.workers,
                "threads_per_worker": self.options.threads,
                "start_method": self.advanced.start_method,
                "in_flight_per_worker": self.advanced.in_flight_per_worker}

    # -- running -----------------------------------------------------------------------------

    def run(self, data: Dataset | Mapping[str, np.ndarray], batch_size: int) -> list[np.ndarray]:
        """Every output of the model on every example, one array per output, in input order.

        ``data`` is cut into shards of ``batch_size`` examples (the last may be smaller); each
        shard is one forward pass in one worker.
        """
        check_shard_size(batch_size)
        dataset = as_dataset(data)
        if len(dataset) == 0:
            raise DataError(f"dataset '{dataset.name}' has no examples to run")
        self._require_open()
        return merge(list(self._stream(split(dataset, batch_size))))

    def imap(self, batches: Iterable[Mapping[str, np.ndarray]]) -> Iterator[list[np.ndarray]]:
        """Stream: the outputs of each batch of ``batches``, in order, as they become ready.

        At most ``workers x in_flight_per_worker`` batches are taken from ``batches`` ahead of
        the output consumed. Stopping early waits for the shards in flight, then leaves the
        pool ready for the next run.
        """
        self._require_open()
        return self._stream(shards_of(batches))

    def _stream(self, shards: Iterator[Shard]) -> Iterator[list[np.ndarray]]:
        self._require_open()
        if self._busy:
            raise InputError("this DataParallel is already running a stream; finish or close "
                             "the previous one first (one run at a time)")
        self._busy = True
        order: InOrder[list[np.ndarray]] = InOrder()
        window = self.workers * self.advanced.in_flight_per_worker
        dispatched, exhausted = 0, False
        try:
            while True:
                self._require_open()  # close() may have been called between two outputs
                while not exhausted and dispatched - order.released < window:
                    worker = self._least_loaded()
                    if worker is None:
                        break  # every worker holds in_flight_per_worker shards
                    shard = next(shards, None)
                    if shard is None:
                        exhausted = True
                        break
                    self._send(worker, shard)
                    dispatched += 1
                if exhausted and order.released == dispatched:
                    return
                for index, outputs in self._collect():
                    order.put(index, outputs)
                yield from order.ready()
        except (GeneratorExit, Exception):
            self._settle()
            raise
        except BaseException:  # KeyboardInterrupt: do not wait for anything
            self._abort()
            raise
        finally:
            self._busy = False

    # -- assign ------------------------------------------------------------------------------

    def _spawn(self) -> None:
        self._pool = assign.spawn(self.workers, self.advanced.start_method, self.spec,
                                  self.runtime, self.options, self.advanced.pin_cores)
        self._finalizer = weakref.finalize(self, assign.kill, [w.process for w in self._pool])

    def _await_ready(self, expected_fingerprint: str | None) -> None:
        deadline = time.monotonic() + self.advanced.start_timeout
        infos: dict[int, dict[str, Any]] = {}
        while waiting := [w for w in self._pool if not w.ready]:
            left = deadline - time.monotonic()
            if left <= 0:
                w = waiting[0]
                raise self._stopped(WorkerTimeoutError(
                    f"worker {w.id} did not open '{self.spec.spec}' on {self.runtime} within "
                    f"{self.advanced.start_timeout:.0f} s (start_timeout); raise "
                    "AdvancedParallelOptions.start_timeout on a slow or busy machine",
                    worker=w.id))
            ready = wait([w.results for w in waiting] + [w.process.sentinel for w in waiting],
                         left)
            for w in waiting:
                if w.results in ready or (w.process.sentinel in ready and w.results.poll()):
                    infos[w.id] = self._ready_message(w)
                elif w.process.sentinel in ready:
                    raise self._crashed(w)
        assign.check_fingerprints(self.spec, infos, expected_fingerprint)
        self.output_names = tuple(infos[0]["outputs"])

    def _ready_message(self, w: WorkerHandle) -> dict[str, Any]:
        message = self._recv(w)
        if message[0] == "error":
            detail = message[2]
            raise self._stopped(WorkerError(
                f"worker {w.id} could not open '{self.spec.spec}' on runtime {self.runtime}: "
                f"{detail['type']}: {detail['message']}", worker=w.id,
                remote_type=detail["type"], remote_traceback=detail["traceback"],
                exit_code=detail["exit_code"]))
        w.ready, w.pid = True, message[1]["pid"]
        info: dict[str, Any] = message[1]
        return info

    def _least_loaded(self) -> WorkerHandle | None:
        free = [w for w in self._pool if len(w.in_flight) < self.advanced.in_flight_per_worker]
        return min(free, key=lambda w: len(w.in_flight)) if free else None

    def _send(self, w: WorkerHandle, shard: Shard) -> None:
        if not w.in_flight:
            w.head_since = time.monotonic()
        w.in_flight.append(Sent(shard.index, shard.start, shard.stop))
        try:
            w.tasks.send((shard.index, shard.inputs))
        except (BrokenPipeError, ConnectionError, EOFError):
            raise self._crashed(w) from None

    # -- coordinate --------------------------------------------------------------------------

    def _collect(self) -> list[tuple[int, list[np.ndarray]]]:
        """Wait for the next results (or a failure) and return the finished shards."""
        busy = [w for w in self._pool if w.in_flight]
        if not busy:
            raise RuntimeError("waiting for results with no shard in flight; a slimkit bug")
        timeout = None
        if self.advanced.shard_timeout is not None:
            now = time.monotonic()
            timeout = max(0.0, min(w.head_since + self.advanced.shard_timeout - now
                                   for w in busy))
        ready = wait([w.results for w in self._pool] + [w.process.sentinel for w in self._pool],
                     timeout)
        done: list[tuple[int, list[np.ndarray]]] = []
        for w in self._pool:
            if w.results in ready or (w.process.sentinel in ready and w.results.poll()):
                done += self._drain_messages(w)
        for w in self._pool:
            if w.process.sentinel in ready:
                raise self._crashed(w)
        self._check_timeouts()
        return done

    def _drain_messages(self, w: WorkerHandle) -> list[tuple[int, list[np.ndarray]]]:
        done = []
        while w.results.poll():
            message = self._recv(w)
            sent = self._complete(w, message[1])
            if message[0] == "error":
                detail = message[2]
                raise WorkerError(
                    f"worker {w.id} failed on {sent.describe()}: {detail['type']}: "
                    f"{detail['message']}", worker=w.id, shard=sent.index,
                    examples=(sent.start, sent.stop), remote_type=detail["type"],
                    remote_traceback=detail["traceback"], exit_code=detail["exit_code"])
            w.shards += 1
            w.busy_seconds += message[3]
            done.append((message[1], message[2]))
        return done

    def _recv(self, w: WorkerHandle) -> tuple[Any, ...]:
        try:
            message: tuple[Any, ...] = w.results.recv()
        except (EOFError, OSError):
            raise self._crashed(w) from None
        return message

    def _complete(self, w: WorkerHandle, index: int) -> Sent:
        if not w.in_flight or w.in_flight[0].index != index:
            raise RuntimeError(f"worker {w.id} returned shard {index} but holds "
                               f"{[s.index for s in w.in_flight]}; a slimkit bug")
        w.head_since = time.monotonic()
        return w.in_flight.popleft()

    def _check_timeouts(self) -> None:
        limit = self.advanced.shard_timeout
        now = time.monotonic()
        for w in self._pool:
            if limit is not None and w.in_flight and now - w.head_since > limit:
                raise self._stopped(WorkerTimeoutError(
                    f"worker {w.id} (pid {w.pid}) returned no result for "
                    f"{w.in_flight[0].describe()} within {limit:g} s (shard_timeout); the pool "
                    "was shut down. Raise AdvancedParallelOptions.shard_timeout for a slow "
                    "model, or look for a deadlock in it", worker=w.id,
                    shard=w.in_flight[0].index,
                    examples=(w.in_flight[0].start, w.in_flight[0].stop)))

    def _settle(self) -> None:
        """After a worker's exception or an early stop: wait out the shards in flight (their
        results are dropped) so the next run starts clean. A crash or a timeout still raises."""
        while self._state == "open" and any(w.in_flight for w in self._pool):
            try:
                self._collect()
            except (WorkerCrashedError, WorkerTimeoutError):
                raise
            except WorkerError:
                continue

    def _crashed(self, w: WorkerHandle) -> WorkerCrashedError:
        w.process.join(1.0)
        how = w.exit_text()
        held = list(w.in_flight)
        where = (f"while running {held[0].describe()}"
                 + (f" (also queued: shards {[s.index for s in held[1:]]})" if held[1:] else "")
                 if held else "while idle" if w.ready else "before it was ready")
        hint = ("with the 'spawn' start method a script must guard its entry point with "
                "`if __name__ == '__main__':`; see the worker's stderr above" if not w.ready
                else "a native crash or the out-of-memory killer (see dmesg) are the usual "
                     "causes; run with workers=1 to reproduce")
        return self._stopped(WorkerCrashedError(
            f"worker {w.id} (pid {w.process.pid}) died ({how}) {where}; the pool was shut down "
            f"and no partial result is returned. {hint[0].upper()}{hint[1:]}",
            worker=w.id, shard=held[0].index if held else None,
            examples=(held[0].start, held[0].stop) if held else None))

    def _stopped(self, error: E) -> E:
        logger.warning("%s", error)
        self._abort()
        return error

    def _abort(self) -> None:
        """Terminate every worker now, close the pipes and remove the temporary files."""
        self._state = "closed"
        assign.kill([w.process for w in self._pool])
        for w in self._pool:
            w.tasks.close()
            w.results.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _require_not_closed(self) -> None:
        if self._state == "closed":
            raise InputError("this DataParallel is closed (by close() or after a worker "
                             "failure); create a new one")

    def _require_open(self) -> None:
        self._require_not_closed()
        if self._state != "open":
            raise InputError("start the workers first: `with DataParallel(...) as dp:` "
                             "or dp.start()")
