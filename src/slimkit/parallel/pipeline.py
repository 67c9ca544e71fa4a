"""Pipeline parallelism: a model's top-level children, in execution order, split into stages
balanced by measured cost; one worker process per stage, joined by bounded queues.

*split*: the model is traced with ``torch.fx``, its top-level children kept as leaves; they must
run as a chain (each consumes only the previous one's output; functions such as ``flatten``
join the child before them). Each child is timed on one micro-batch, and the chain is cut into
``stages`` contiguous parts that minimise the slowest stage. ``torch.fx``'s ``split_module``
builds each stage's module, in the parent (to plan) and in each worker (from the model *spec*,
never a pickled module; the weights' fingerprint is checked as in :class:`DataParallel`).

*assign*: stage ``i`` runs in its own process with pinned thread counts (and cores).

*coordinate*: micro-batches flow through ``multiprocessing`` queues of ``depth`` slots each
(a full queue blocks its producer: back-pressure); at most ``stages x depth`` micro-batches are
in the pipeline. Every wait has a short timeout and checks the stage processes, so a crash
becomes :class:`WorkerCrashedError` and a stall :class:`WorkerTimeoutError`, never a hang.
Only the standard library is imported at module level (stage processes import this module
before pinning their threads).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimkit.errors import InputError
from slimkit.parallel.errors import WorkerCrashedError, WorkerError, WorkerTimeoutError
from slimkit.parallel.spec import ModelSpec, weights_fingerprint
from slimkit.parallel.stages import StagePlan, build_stages, plan
from slimkit.parallel.worker import describe, pin_threads, pin_torch

if TYPE_CHECKING:
    import numpy as np

    from slimkit.data import Dataset
    from slimkit.model import Model

POLL_S = 0.05  # how often blocked puts/gets look at the stage processes


# -- the stage process ----------------------------------------------------------------------

def stage_main(stage: int, target: ModelSpec, boundaries: tuple[int, ...], threads: int,
               inbox: Any, outbox: Any, status: Any, cores: tuple[int, ...] | None) -> None:
    """A stage worker: build its stage from the spec, then pass micro-batches on until ``None``.

    Messages on the queues: ``("ok", index, arrays)``, ``("error", index, stage, detail)`` (an
    error is passed on to the end unchanged), ``None`` (stop). On ``status``: ``("ready",
    stage, info)`` or ``("failed", stage, detail)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pin_threads(threads, cores)
    parent = os.getppid()
    try:
        import torch

        pin_torch(threads)
        model = target.load()
        module = model.require_module("pipeline parallelism").eval()
        stage_module = build_stages(module, boundaries)[stage]
        status.put(("ready", stage, {"pid": os.getpid(), "outputs": list(model.output_names),
                                     "fingerprint": weights_fingerprint(module)}))
    except Exception as exc:
        status.put(("failed", stage, describe(exc)))
        return
    while True:
        try:
            message = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return  # the parent died: leave no orphan
            continue
        if message is not None and message[0] == "ok":
            try:
                with torch.inference_mode():
                    out = stage_module(*(torch.from_numpy(a) for a in message[2]))
                outs = out if isinstance(out, (tuple, list)) else (out,)
                message = ("ok", message[1], [o.numpy() for o in outs])
            except Exception as exc:
                message = ("error", message[1], stage, describe(exc))
        outbox.put(message)
        if message is None:
            return


# -- the coordinator ------------------------------------------------------------------------

@dataclass(frozen=True)
class AdvancedPipelineOptions:
    """Rarely changed knobs: queue slots per stage, timeouts, core pinning, start method."""

    depth: int = 2
    micro_batch_timeout: float | None = 300.0
    start_timeout: float = 300.0
    pin_cores: bool = False
    start_method: str = "spawn"

    def __post_init__(self) -> None:
        from slimkit.parallel.options import StartMethod, positive_int

        positive_int(self.depth, "depth")
        StartMethod(self.start_method)
        if self.micro_batch_timeout is not None and not self.micro_batch_timeout > 0:
            raise InputError("micro_batch_timeout must be > 0 seconds or None")


@dataclass
class _Stage:
    process: Any
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class PipelineParallel:
    """Run a torch model as a pipeline of ``stages`` worker processes; outputs in input order.

    Args:
        model: a model spec, a :class:`ModelSpec` or a ``Model`` (torch; workers re-load it).
        stages: how many stages (processes); ``split`` fixes their first units instead of
            balancing by measured cost.
        micro_batch: examples per micro-batch.
        threads_per_stage: intra-op threads of each stage.

    Example (skipped in doctests: it starts processes that import torch):
        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
        >>> spec = ModelSpec("slimkit.testing:tiny_cnn", input_shape=(1, 3, 8, 8))
        >>> with PipelineParallel(spec, stages=2, micro_batch=2) as pp:  # doctest: +SKIP
        ...     pp.run({"input": x})[0].shape
        (6, 4)
    """

    def __init__(self, model: str | os.PathLike[str] | ModelSpec | Model, stages: int = 2,
                 split: Sequence[int] | None = None, micro_batch: int = 8,
                 threads_per_stage: int = 1,
                 advanced: AdvancedPipelineOptions | None = None) -> None:
        from slimkit.parallel import assign
        from slimkit.parallel.options import positive_int

        self.stages = positive_int(stages, "stages")
        self.micro_batch = positive_int(micro_batch, "micro_batch")
        self.threads = positive_int(threads_per_stage, "threads_per_stage")
        self.advanced = advanced or AdvancedPipelineOptions()
        self.split = None if split is None else tuple(split)
        self._model = model
        self._procs: list[_Stage] = []
        self._queues: list[Any] = []
        self._state = "new"
        self.plan: StagePlan | None = None
        self.output_names: tuple[str, ...] = ()
        assign.warn_if_oversubscribed(self.stages, self.threads)

    def __enter__(self) -> PipelineParallel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, sample: np.ndarray | None = None) -> PipelineParallel:
        """Plan the stages (timing each unit on ``sample`` or a synthetic micro-batch), then
        start one process per stage and wait until each has built its stage."""
        import multiprocessing

        from slimkit.data import synthetic
        from slimkit.parallel import assign
        from slimkit.parallel.spec import prepare

        if self._state != "new":
            raise InputError("this PipelineParallel was started already; create a new one")
        with tempfile.TemporaryDirectory() as tmp:
            spec, expected = prepare(self._model, "torch", Path(tmp))
        given = self._model if not isinstance(self._model, (str, os.PathLike, ModelSpec)) \
            else spec.load()
        module = given.require_module("pipeline parallelism").eval()
        if sample is None:
            sample = next(iter(synthetic(given.inputs, self.micro_batch).inputs.values()))
        self.plan = plan(module, sample, self.stages, self.threads, self.split)
        expected = expected or weights_fingerprint(module)
        ctx: Any = multiprocessing.get_context(self.advanced.start_method)
        self._queues = [ctx.Queue(maxsize=self.advanced.depth) for _ in range(self.stages + 1)]
        self._status = ctx.Queue()
        cores = assign.core_plan(self.stages, self.threads) if self.advanced.pin_cores \
            else [None] * self.stages
        self._state = "open"
        try:
            for i in range(self.stages):
                p = ctx.Process(target=stage_main, name=f"slimkit-stage-{i}", daemon=True,
                                args=(i, spec, self.plan.boundaries, self.threads,
                                      self._queues[i], self._queues[i + 1], self._status,
                                      cores[i]))
                p.start()
                self._procs.append(_Stage(p))
            self._await_ready(expected)
        except BaseException:
            self._abort()
            raise
        return self

    def _await_ready(self, expected: str) -> None:
        deadline = time.monotonic() + self.advanced.start_timeout
        while not all(s.ready for s in self._procs):
            try:
                kind, stage, info = self._status.get(timeout=POLL_S)
            except queue.Empty:
                self._check_alive("before it was ready", ())
                if time.monotonic() > deadline:
                    raise WorkerTimeoutError(f"pipeline stages did not start within "
                                             f"{self.advanced.start_timeout:g} s",
                                             worker=-1) from None
                continue
            if kind == "failed":
                raise WorkerError(f"pipeline stage {stage} could not build its part of the "
                                  f"model: {info['type']}: {info['message']}", worker=stage,
                                  remote_type=info["type"], remote_traceback=info["traceback"],
                                  exit_code=info["exit_code"])
            if info["fingerprint"] != expected:
                raise InputError(f"pipeline stage {stage} loaded other weights than the model "
                                 "given (changed after loading, or an unseeded factory); "
                                 "pass a spec with weights=")
            self._procs[stage].ready, self._procs[stage].info = True, info
        self.output_names = tuple(self._procs[-1].info["outputs"])

    def run(self, data: Dataset | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Every output on every example, in input order (micro-batches of ``micro_batch``)."""
        from slimkit.parallel.shards import InOrder, as_dataset, merge, split

        if self._state != "open":
            raise InputError("start the pipeline first (`with PipelineParallel(...) as pp:`); "
                             "a closed or failed pipeline cannot run again")
        dataset = as_dataset(data)
        if len(dataset.inputs) != 1:
            raise InputError(f"pipeline parallelism takes one input; got {list(dataset.inputs)}")
        shards = split(dataset, self.micro_batch)
        order: InOrder[list[np.ndarray]] = InOrder()
        window = self.stages * self.advanced.depth
        sent, exhausted, results = 0, False, []
        try:
            while not (exhausted and order.released == sent):
                while not exhausted and sent - order.released < window:
                    shard = next(shards, None)
                    if shard is None:
                        exhausted = True
                        break
                    self._put(("ok", shard.index, list(shard.inputs.values())), order.released,
                              sent)
                    sent += 1
                if sent > order.released:
                    index, outputs = self._get(order.released, sent)
                    order.put(index, outputs)
                    results += list(order.ready())
        except BaseException:
            self._abort()
            raise
        return merge(results)

    def _put(self, message: tuple[Any, ...], first: int, sent: int) -> None:
        while True:
            try:
                self._queues[0].put(message, timeout=POLL_S)
                return
            except queue.Full:
                self._check_alive("", range(first, sent))

    def _get(self, first: int, sent: int) -> tuple[int, list[np.ndarray]]:
        limit = self.advanced.micro_batch_timeout
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            try:
                message = self._queues[-1].get(timeout=POLL_S)
                break
            except queue.Empty:
                self._check_alive("", range(first, sent))
                if deadline is not None and time.monotonic() > deadline:
                    raise WorkerTimeoutError(
                        f"the pipeline returned no micro-batch within {limit:g} s "
                        f"(micro_batch_timeout) with micro-batches {first}..{sent - 1} in it; "
                        "it was shut down", worker=-1, shard=first) from None
        if message[0] == "error":
            _, index, stage, detail = message
            raise WorkerError(f"pipeline stage {stage} failed on micro-batch {index} (examples "
                              f"{index * self.micro_batch}..): {detail['type']}: "
                              f"{detail['message']}", worker=stage, shard=index,
                              remote_type=detail["type"], remote_traceback=detail["traceback"],
                              exit_code=detail["exit_code"])
        return message[1], message[2]

    def _check_alive(self, when: str, in_flight: range | tuple[()]) -> None:
        for i, s in enumerate(self._procs):
            code = s.process.exitcode
            if code is not None:
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else \
                    f"exit code {code}"
                held = f"with micro-batches {list(in_flight)} in the pipeline" if in_flight \
                    else when or "while idle"
                raise WorkerCrashedError(f"pipeline stage {i} (pid {s.process.pid}) died "
                                         f"({how}) {held}; the pipeline was shut down and no "
                                         "partial result is returned", worker=i,
                                         shard=in_flight[0] if in_flight else None)

    def close(self) -> None:
        """Stop the stages (they finish what they hold, then exit) and clean up."""
        if self._state == "open":
            with contextlib.suppress(Exception):
                self._queues[0].put(None, timeout=1.0)
            deadline = time.monotonic() + 5.0
            for s in self._procs:
                s.process.join(max(0.0, deadline - time.monotonic()))
        self._abort()

    def _abort(self) -> None:
        from slimkit.parallel import assign

        self._state = "closed"
        assign.kill([s.process for s in self._procs])
        for q in [*self._queues, *([self._status] if hasattr(self, "_status") else [])]:
            q.cancel_join_thread()
            q.close()
        self._queues = []

    def describe(self) -> dict[str, Any]:
        p = self.plan
        return {"stages": self.stages, "micro_batch": self.micro_batch,
                "threads_per_stage": self.threads, "advanced": asdict(self.advanced),
                "plan": None if p is None else {"units": list(p.units),
                                                "boundaries": list(p.boundaries),
                                                "unit_ms": list(p.unit_ms),
                                                "stage_ms": p.stage_ms}}
