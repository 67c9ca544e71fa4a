"""Assign: worker processes, their cores and their lifecycle (start, check, kill).

The coordinator (``pool.py``) owns the protocol; this file owns the processes: it starts them
with the pipes they talk through, plans which cores they may run on, warns when they would
oversubscribe the cores, and terminates them without leaving orphans or zombies.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from slimkit.errors import ModelLoadError
from slimkit.parallel.errors import OversubscriptionWarning
from slimkit.parallel.spec import ModelSpec
from slimkit.parallel.worker import serve
from slimkit.runtime.base import RuntimeOptions


@dataclass(frozen=True)
class Sent:
    """A shard handed to a worker (its arrays are not kept)."""

    index: int
    start: int
    stop: int

    def describe(self) -> str:
        return f"shard {self.index} (examples {self.start}:{self.stop})"


@dataclass
class WorkerHandle:
    """The parent's view of one worker process."""

    id: int
    process: BaseProcess
    tasks: Connection  # parent -> worker
    results: Connection  # worker -> parent
    in_flight: deque[Sent] = field(default_factory=deque)
    head_since: float = 0.0  # when the worker's oldest shard in flight became its current one
    pid: int | None = None
    ready: bool = False
    shards: int = 0
    busy_seconds: float = 0.0

    def exit_text(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "still running"
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def spawn(count: int, start_method: str, spec: ModelSpec, runtime: str, options: RuntimeOptions,
          pin_cores: bool) -> list[WorkerHandle]:
    """Start ``count`` workers; each opens a ``runtime`` session on ``spec``."""
    context: Any = multiprocessing.get_context(start_method)  # typeshed: BaseContext lacks Process
    cores = core_plan(count, options.threads) if pin_cores else [None] * count
    workers: list[WorkerHandle] = []
    try:
        for i in range(count):
            task_out, task_in = context.Pipe(duplex=False)
            result_out, result_in = context.Pipe(duplex=False)
            process = context.Process(
                target=serve, name=f"slimkit-parallel-{i}", daemon=True,
                args=(i, spec, runtime, asdict(options), task_out, result_in, cores[i]))
            process.start()
            workers.append(WorkerHandle(i, process, task_in, result_out))
            task_out.close()  # the worker holds these ends now; closing ours lets EOF through
            result_in.close()
    except BaseException:
        kill([w.process for w in workers])
        raise
    return workers


def kill(processes: list[BaseProcess]) -> None:
    """Terminate, then kill what is left, then reap: no orphan and no zombie stays behind."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + 2.0
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def check_fingerprints(spec: ModelSpec, infos: dict[int, dict[str, Any]],
                        expected: str | None) -> None:
    prints = {i: info["fingerprint"] for i, info in infos.items()}
    if expected is not None and any(p != expected for p in prints.values()):
        raise ModelLoadError(
            f"the workers re-load the model from its source '{spec.spec}', but that gives other "
            "weights than the model passed in (changed after loading?); pass the model as a "
            "spec with weights=, or use runtime='onnxruntime' (which exports the given model)")
    if len(set(prints.values())) > 1:
        raise ModelLoadError(
            f"workers loaded different weights from '{spec.spec}' (fingerprints "
            f"{ {i: p[:12] if p else p for i, p in prints.items()} }): its factory is not "
            "deterministic; seed it (torch.manual_seed) or pass weights=")


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), not all the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def warn_if_oversubscribed(workers: int, threads: int) -> None:
    cores = available_cores()
    if workers * threads > cores:
        warnings.warn(OversubscriptionWarning(
            f"{workers} workers x {threads} threads = {workers * threads} threads on {cores} "
            f"cores: they compete for the cores and each runs slower; keep workers x "
            f"threads_per_worker <= {cores}"), stacklevel=3)


def core_plan(workers: int, threads: int) -> list[tuple[int, ...] | None]:
    """Worker i runs on cores i*threads .. i*threads+threads-1 (wrapping around)."""
    if not hasattr(os, "sched_getaffinity"):
        return [None] * workers
    cores = sorted(os.sched_getaffinity(0))
    return [tuple(sorted({cores[(i * threads + j) % len(cores)] for j in range(threads)}))
            for i in range(workers)]
