"""The worker process: pin its thread counts, open one runtime session on the model spec, then
run shards until told to stop or until the parent goes away.

Messages to the parent, on the results pipe:
    ("ready", info)                       the session is open; info has pid and a fingerprint
    ("ok", index, outputs, seconds)       shard ``index`` done
    ("error", index | None, detail)       shard ``index`` raised (None: opening failed)

A reader thread drains the task pipe into a local queue, so the parent's sends never wait on
a worker that is busy computing, and the worker sees the parent's end of the pipe close (EOF)
when the parent exits: it then stops, leaving no orphan behind.

Only the standard library is imported at module level: a new worker sets its thread variables
before torch, ONNX Runtime or NumPy's BLAS are loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from slimkit.parallel.spec import ONNX_RUNTIMES, ModelSpec, weights_fingerprint

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
Task = tuple[int, dict[str, Any]]


def serve(worker: int, target: ModelSpec, runtime: str, options: dict[str, Any],
          tasks: Connection, results: Connection, cores: tuple[int, ...] | None) -> None:
    """The worker's main function (the ``target`` of its process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    pin_threads(int(options["threads"]), cores)
    try:
        session, info = _open(target, runtime, options)
    except Exception as exc:
        _send(results, ("error", None, describe(exc)))
        return
    try:
        if not _send(results, ("ready", info)):
            return
        inbox = _start_reader(tasks)
        with session.pinned():
            while (task := inbox.get()) is not None:
                if not _send(results, _run_one(session, task)):
                    return  # the parent is gone
    finally:
        session.close()


def pin_threads(threads: int, cores: tuple[int, ...] | None) -> None:
    """Size this process's thread pools (OpenMP, MKL, OpenBLAS) before any of them loads and,
    optionally, bind it to ``cores``. Torch's own count is set once torch is loaded
    (:func:`pin_torch`); ONNX Runtime's comes with the session options."""
    for var in THREAD_ENV:
        os.environ[var] = str(threads)
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)


def pin_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only allowed before any inter-op work
        torch.set_num_interop_threads(1)


def describe(exc: BaseException) -> dict[str, Any]:
    """A picklable account of an exception: type, message, CLI exit code, traceback."""
    from slimkit.errors import SlimkitError

    return {"type": type(exc).__name__, "message": str(exc).strip() or repr(exc),
            "exit_code": exc.exit_code if isinstance(exc, SlimkitError) else 1,
            "traceback": "".join(traceback.format_exception(exc))}


def _open(target: ModelSpec, runtime: str, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from slimkit.runtime import RUNTIMES, RuntimeOptions, create_session

    model = target.load()
    fingerprint = None
    if model.module is not None:
        pin_torch(int(options["threads"]))
        fingerprint = weights_fingerprint(model.module)
    if runtime in ONNX_RUNTIMES and model.onnx_path is not None:
        importlib.import_module(ONNX_RUNTIMES[runtime])  # registers it; torch stays unloaded
        session = RUNTIMES.get(runtime)(model, RuntimeOptions(**options))
    else:
        session = create_session(model, runtime, RuntimeOptions(**options))
    info = {"pid": os.getpid(), "model": model.name, "outputs": list(model.output_names),
            "fingerprint": fingerprint, "torch_loaded": "torch" in sys.modules}
    return session, info


def _run_one(session: Any, task: Task) -> tuple[Any, ...]:
    index, inputs = task
    start = time.perf_counter()
    try:
        outputs = session.run(inputs)
    except Exception as exc:
        return ("error", index, describe(exc))
    return ("ok", index, outputs, time.perf_counter() - start)


def _send(results: Connection, message: tuple[Any, ...]) -> bool:
    """Send ``message``; False when the parent has gone away."""
    try:
        results.send(message)
    except (BrokenPipeError, EOFError, ConnectionError):
        return False
    except Exception as exc:  # an output that cannot be pickled
        if message[0] == "error":
            raise
        return _send(results, ("error", message[1], describe(exc)))
    return True


def _start_reader(tasks: Connection) -> queue.SimpleQueue[Task | None]:
    inbox: queue.SimpleQueue[Task | None] = queue.SimpleQueue()

    def read() -> None:
        while True:
            try:
                task = tasks.recv()
            except Exception:  # EOF: the parent closed the pipe (close()) or died
                task = None
            inbox.put(task)
            if task is None:
                return

    threading.Thread(target=read, name="slimkit-parallel-reader", daemon=True).start()
    return inbox
