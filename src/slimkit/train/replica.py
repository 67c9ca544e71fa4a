"""What one data-parallel worker (rank) does: pin its threads, join the process group, train
its share of every batch through the DDP-wrapped module, and (rank 0 of a launched job) write
the trained weights.

The training loop is the one of ``slimkit.train.loop`` (a ``Trainer`` with ``shard=(rank,
workers)``), so N workers follow the trajectory of one process with the same global batch:
every worker draws the same seeded order, takes examples ``rank, rank + N, ...`` of each
batch and weights its loss by its share, and DDP averages the gradients. BatchNorm statistics
are computed per worker (standard DDP: ``SyncBatchNorm`` runs on GPUs only), so models with
BatchNorm follow that trajectory only approximately; rank 0's running statistics are kept.
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from slimkit.data import Dataset
    from slimkit.model import Model
    from slimkit.train.hooks import FinetuneConfig, TrainHooks

WEIGHTS = "weights.safetensors"
LOSSES = "losses.json"
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}  # device type -> torch.distributed backend


@dataclass(frozen=True)
class Job:
    """What the launcher hands every worker it starts: where the rendezvous store listens, the
    thread count of each rank, the folder for results and errors, and the pickled work."""

    port: int
    workers: int
    threads: tuple[int, ...]
    folder: str
    timeout_s: float
    payload: bytes  # pickle of (model, data, config, hooks), made by the launching process
    host: str = "127.0.0.1"


def run_rank(rank: int, job: Job) -> None:
    """The entry point of a launched worker (``torch.multiprocessing.start_processes``)."""
    import torch.distributed as dist

    from slimkit.parallel.worker import pin_threads, pin_torch
    from slimkit.progress import set_quiet

    set_quiet(rank != 0)  # one progress bar, not one per worker
    pin_threads(job.threads[rank], None)
    pin_torch(job.threads[rank])
    try:
        timeout = datetime.timedelta(seconds=job.timeout_s)
        device = device_for(rank, job.workers)
        store = dist.TCPStore(job.host, job.port, is_master=False, timeout=timeout)
        dist.init_process_group(BACKENDS[device.type], store=store, rank=rank,
                                world_size=job.workers, timeout=timeout)
        # the payload was pickled by the launching process for its own children (not read
        # from any file): unpickling it is as safe as the objects the caller passed in
        model, data, config, hooks = pickle.loads(job.payload)  # noqa: S301
        module, losses = train_replica(model, data, config, hooks, device)
        if rank == 0:
            save_result(module, losses, Path(job.folder))
        dist.destroy_process_group()
    except BaseException as exc:
        record_error(Path(job.folder), rank, exc)
        raise


def train_replica(model: Model, data: Dataset, config: FinetuneConfig, hooks: TrainHooks,
                  device: torch.device) -> tuple[nn.Module, list[float]]:
    """Train ``model.module`` (in place, on ``device``) as this rank of the current process
    group; returns the module (back on the CPU) and the mean loss of every epoch over all
    workers."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from slimkit.train.hooks import hooks_loss, teacher_outputs
    from slimkit.train.loop import Trainer

    rank, workers = dist.get_rank(), dist.get_world_size()
    module = model.require_module("fine-tuning").to(device)
    if device.type == "cuda":
        hooks = replace(hooks, loss_fn=_OnDevice(hooks.loss_fn, device))
    # static_graph: parameters that get no gradient (unused heads) are found once, on the
    # first step, instead of failing DDP's reduction or being searched for at every step
    ddp = DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None,
                                  static_graph=True)
    local = Trainer(replace(model, module=ddp), data, config.train_config(), hooks_loss(hooks),
                    shard=(rank, workers), batch_hook=teacher_outputs(hooks.teacher),
                    description="fine-tuning").run()
    totals = torch.tensor(local, dtype=torch.float64, device=device)
    dist.all_reduce(totals)  # each rank's epoch loss is its weighted share of the batch mean
    return module.cpu().eval(), [float(v) / workers for v in totals.cpu()]


class _OnDevice:
    """Moves the labels and teacher outputs of a batch to the model's device before the loss
    (the loop builds them on the CPU)."""

    def __init__(self, loss_fn: Any, device: torch.device) -> None:
        from slimkit.train.hooks import cross_entropy

        self.loss_fn, self.device = loss_fn or cross_entropy, device

    def __call__(self, outputs: Any, batch: Any) -> torch.Tensor:
        moved = {k: getattr(batch, k).to(self.device) for k in ("labels", "teacher_outputs")
                 if getattr(batch, k) is not None}
        return self.loss_fn(outputs, replace(batch, **moved))


def device_for(local_rank: int, local_workers: int) -> torch.device:
    """``cuda:local_rank`` when there is one GPU per local worker, else the CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() >= local_workers:
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def threads_per_rank(cores: int, workers: int) -> tuple[int, ...]:
    """Split ``cores`` over ``workers`` (at least one thread each; the first ranks take the
    remainder).

    Example:
        >>> threads_per_rank(16, 3), threads_per_rank(2, 2), threads_per_rank(2, 4)
        ((6, 5, 5), (1, 1), (1, 1, 1, 1))
    """
    return tuple(max(1, cores // workers + (rank < cores % workers)) for rank in range(workers))


def save_result(module: nn.Module, losses: list[float], folder: Path) -> None:
    """Rank 0's weights (safetensors) and losses, each written atomically into ``folder``."""
    from safetensors.torch import save_model

    from slimkit.io import atomic_path, write_text_atomic

    write_text_atomic(folder / LOSSES, json.dumps(losses))
    with atomic_path(folder / WEIGHTS) as tmp:
        save_model(module, str(tmp))


def record_error(folder: Path, rank: int, exc: BaseException) -> None:
    """What failed on this rank and when (the launcher reports the earliest failure: the
    others usually only lost their peer)."""
    from slimkit.io import write_text_atomic
    from slimkit.parallel.worker import describe

    if isinstance(exc, KeyboardInterrupt) or not folder.is_dir():
        return  # stopped by the launcher, or the launcher is gone
    detail = {**describe(exc), "rank": rank, "time": time.time(), "pid": os.getpid()}
    write_text_atomic(folder / f"error-{rank}.json", json.dumps(detail))
