"""Start data-parallel fine-tuning: launch the worker processes (or join a ``torchrun`` job),
wait for them, and bring rank 0's weights back.

Launcher: ``torch.multiprocessing.start_processes`` with a ``TCPStore`` this process opens on
port 0 (the OS picks a free port: no race for a guessed one) as the rendezvous. Workers start
from multiprocessing's forkserver (``spawn`` where there is none), preloaded with torch and
``torch._dynamo`` (which DDP imports: 4-6 s per process here): after the first launch of a
process, starting the workers costs well under a second instead of ~10 s with ``spawn``. The
forkserver is a clean single-threaded process, so forking it is safe, unlike forking this one.
``torch.distributed.launcher.api.elastic_launch`` (torchrun's machinery) was not used: it
installs signal handlers (so it works only from the main thread, not from a search's worker
thread), runs a rendezvous and a restart agent that a one-machine job does not need, and adds
seconds of start-up. ``start_processes`` gives what matters here: each rank's traceback, and
on the first failure it terminates the other ranks (which would otherwise wait in an
all-reduce); the collectives' timeout bounds any hang in the workers themselves.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pickle
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimkit.errors import InputError
from slimkit.parallel.errors import WorkerCrashedError, WorkerError, WorkerTimeoutError

if TYPE_CHECKING:
    from slimkit.data import Dataset
    from slimkit.model import Model
    from slimkit.train.hooks import FinetuneConfig, TrainHooks, TrainResult
    from slimkit.train.replica import Job

log = logging.getLogger(__name__)
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
GRACE_S = 2.0  # after one rank fails: how long the others get to exit before SIGTERM/SIGKILL
# imported once by the forkserver, inherited by every worker it forks
PRELOAD = ["__main__", "torch", "torch._dynamo", "torch.nn.parallel", "safetensors.torch",
           "slimkit.train.replica", "slimkit.train.loop"]


def finetune_ddp(model: Model, data: Dataset, config: FinetuneConfig | None = None,
                 hooks: TrainHooks | None = None, workers: int | None = None,
                 timeout_s: float = 300.0) -> TrainResult:
    """Fine-tune a copy of ``model`` with ``workers`` data-parallel processes (DDP).

    Each worker trains on its share of every ``config.batch_size`` batch (the same seeded
    order as one process), so the result matches :func:`slimkit.train.finetune.finetune` with
    the same config up to the order of float sums (and per-worker BatchNorm statistics).
    Rank 0's weights come back through a safetensors file in a temporary folder; ``model`` is
    not modified. A failed worker stops the others and raises ``WorkerError`` (its exception,
    rank and traceback), ``WorkerCrashedError`` (the process died) or ``WorkerTimeoutError``
    (a worker waited ``timeout_s`` for its peers); no weights are returned then.

    Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the call joins that job instead of
    launching one: every process gets the trained model; save it from rank 0 only::

        torchrun --standalone --nproc-per-node 2 train.py

    where ``train.py`` calls ``finetune_ddp(model, data, FinetuneConfig(epochs=2))``. Threads
    are pinned to cores / workers per process (restored afterwards under torchrun).

    Args:
        model: a torch model (unstructured-pruning masks are kept and stay applied).
        data: training examples, labels for the built-in cross-entropy.
        config: as for ``finetune``; ``batch_size`` is the global batch of all workers.
        hooks: loss, teacher and penalty (distillation); closures are sent to the workers
            with cloudpickle when it is installed.
        workers: processes to launch (default ``config.workers``); ignored under torchrun.
        timeout_s: the longest a worker waits for its peers (start-up, every collective).

    Example:
        >>> from slimkit.testing import tiny_model
        >>> from slimkit.data import Dataset
        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        >>> r = finetune_ddp(tiny_model("mlp"), Dataset({"input": x}, np.arange(64) % 4),
        ...                  FinetuneConfig(epochs=1, batch_size=16), workers=2)  # doctest: +SKIP
        >>> len(r.losses)  # doctest: +SKIP
        1
    """
    from slimkit.graph.masks import copy_masked
    from slimkit.train.hooks import FinetuneConfig, TrainHooks, TrainResult

    config, hooks = config or FinetuneConfig(), hooks or TrainHooks()
    torchrun = launched_by_torchrun()
    if torchrun:
        workers = int(os.environ["WORLD_SIZE"])
    elif workers is None:
        workers = config.workers
    config = replace(config, workers=workers)  # validated again: 1 <= workers <= batch_size
    _check(data, config, hooks, timeout_s)
    if torchrun:
        return _join_torchrun(model, data, config, hooks, timeout_s)
    module = copy_masked(model.require_module("fine-tuning"))
    trained = replace(model, module=module)
    losses = _launch(trained, data, config, hooks, timeout_s) if config.epochs else []
    module.eval()
    return TrainResult(trained, losses)


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a ``torchrun`` job (or another launcher that sets
    ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``).

    Example:
        >>> import os
        >>> launched_by_torchrun() == all(v in os.environ for v in TORCHRUN_ENV)
        True
    """
    return all(var in os.environ for var in TORCHRUN_ENV)


def _check(data: Dataset, config: FinetuneConfig, hooks: TrainHooks, timeout_s: float) -> None:
    """Fail here, before any process starts, on what every worker would fail on."""
    if len(data) < config.workers:
        raise InputError(f"{config.workers} workers need at least as many examples; the data "
                         f"has {len(data)}")
    from slimkit.train.hooks import check_hooks

    check_hooks(hooks)
    if hooks.loss_fn is None and data.labels is None:
        raise InputError("fine-tuning with the built-in cross-entropy needs labelled data "
                         "(a .npz with 'labels', or builtin:digits); otherwise pass loss_fn")
    if not timeout_s > 0:
        raise InputError(f"timeout_s must be > 0, got {timeout_s}")


def _launch(model: Model, data: Dataset, config: FinetuneConfig, hooks: TrainHooks,
            timeout_s: float) -> list[float]:
    """Run ``config.workers`` ranks; rank 0's weights are loaded into ``model.module``."""
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from safetensors.torch import load_model

    from slimkit.parallel.assign import available_cores
    from slimkit.train.replica import LOSSES, WEIGHTS, Job, run_rank, threads_per_rank

    payload = _payload(model, data, config, hooks)
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=timeout_s))
    with tempfile.TemporaryDirectory(prefix="slimkit-ddp-") as folder:
        job = Job(store.port, config.workers, threads_per_rank(available_cores(), config.workers),
                  folder, timeout_s, payload)
        started = time.perf_counter()
        context = mp.start_processes(run_rank, args=(job,), nprocs=config.workers, join=False,
                                     start_method=_start_method())
        try:
            while not context.join(timeout=1.0, grace_period=GRACE_S):
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            _stop(context.processes)
            raise _failure(Path(folder), exc, job, context.processes) from None
        finally:
            _stop(context.processes)
            del store  # closes the port
        log.info("%d workers trained in %.1f s", config.workers, time.perf_counter() - started)
        load_model(model.require_module("fine-tuning"), str(Path(folder) / WEIGHTS))
        losses: list[float] = json.loads((Path(folder) / LOSSES).read_text())
    return losses


def _start_method() -> str:
    """``forkserver`` (preloaded; a no-op when it already runs) where there is one."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    multiprocessing.set_forkserver_preload(PRELOAD)
    return "forkserver"


def _payload(model: Model, data: Dataset, config: FinetuneConfig, hooks: TrainHooks) -> bytes:
    """The work, pickled once for the workers (closures need cloudpickle)."""
    work = (replace(model, tokenizer=None), data, config, hooks)
    try:
        return pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        first = exc
    try:
        import cloudpickle
    except ImportError:
        raise InputError(f"the model or hooks cannot be sent to worker processes ({first}); "
                         "define loss_fn/penalty at module level, or `pip install "
                         "cloudpickle`, or use workers=1") from None
    try:
        return bytes(cloudpickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        raise InputError(f"the model or hooks cannot be sent to worker processes ({exc}); "
                         "use workers=1, or run the script under torchrun") from None


def _failure(folder: Path, exc: Exception, job: Job, processes: list[Any]) -> WorkerError:
    """The clearest account of a failed job. A rank that died without an exception (exit code
    or signal; not the SIGTERM this launcher sends) is the cause; else the earliest exception a
    rank recorded (the others usually only lost their peer); else what ``join`` saw."""
    records = {r["rank"]: r for r in map(json.loads, map(Path.read_text,
                                                       folder.glob("error-*.json")))}
    tail = "; the other workers were stopped and no weights were returned"
    died = [(rank, p.exitcode) for rank, p in enumerate(processes)
            if p.exitcode not in (0, -signal.SIGTERM) and rank not in records]
    if died:
        rank, code = died[0]
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return WorkerCrashedError(
            f"fine-tuning worker {rank} of {job.workers} died ({how}){tail}. A native crash or "
            "the out-of-memory killer (see dmesg) are the usual causes; run with workers=1 to "
            "reproduce", worker=rank)
    if not records:
        hint = (" A script must guard its entry point with `if __name__ == '__main__':` "
                "(workers re-import it)" if "bootstrapping phase" in str(exc) else "")
        index = getattr(exc, "error_index", 0)
        return WorkerError(f"fine-tuning worker {index} of {job.workers} failed before "
                           f"training: {str(exc).strip().splitlines()[-1]}{tail}.{hint}",
                           worker=index, remote_traceback=str(exc))
    first = min(records.values(), key=lambda r: r["time"])
    timed_out = "timed out" in first["message"].lower() or "timeout" in first["message"].lower()
    stuck = [rank for rank, p in enumerate(processes)
             if p.exitcode == -signal.SIGTERM and rank not in records]
    why = (f" (no word from its peers within timeout_s={job.timeout_s:g}; still busy when "
           f"stopped: worker {', '.join(map(str, stuck)) or '?'})" if timed_out else "")
    return (WorkerTimeoutError if timed_out else WorkerError)(
        f"fine-tuning worker {first['rank']} of {job.workers} failed{why}: {first['type']}: "
        f"{first['message']}{tail}", worker=first["rank"], remote_type=first["type"],
        remote_traceback=first["traceback"], exit_code=first["exit_code"])


def _stop(processes: list[Any]) -> None:
    """Terminate (then kill) any worker still running: none outlives the call."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(GRACE_S)
        if process.is_alive():
            process.kill()
            process.join()


def _join_torchrun(model: Model, data: Dataset, config: FinetuneConfig, hooks: TrainHooks,
                   timeout_s: float) -> TrainResult:
    """Train as one rank of the surrounding torchrun job; every rank returns the result."""
    import torch
    import torch.distributed as dist

    from slimkit.graph.masks import copy_masked
    from slimkit.parallel.assign import available_cores
    from slimkit.train.hooks import TrainResult
    from slimkit.train.replica import BACKENDS, device_for, threads_per_rank, train_replica

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_workers = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    device = device_for(local_rank, local_workers)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(BACKENDS[device.type],
                                timeout=datetime.timedelta(seconds=timeout_s))
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_rank(available_cores(), local_workers)[local_rank])
    try:
        module = copy_masked(model.require_module("fine-tuning"))
        trained, losses = train_replica(replace(model, module=module), data, config, hooks,
                                        device)
    finally:
        torch.set_num_threads(threads)
        if created:
            dist.destroy_process_group()
    return TrainResult(replace(model, module=trained), losses)
