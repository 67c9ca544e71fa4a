"""The one training loop of slimkit: fine-tuning after pruning, distillation, quantization-aware
training, clustering, the built-in zoo and the search's finalists all train through it.

What differs between them is data, not loops: the loss of a batch (a :data:`LossStep`, which
runs the forward pass itself, so distillation can tap features and a teacher), the parameters
trained, a hook before every step (masks, weight sharing), a callback after it (evaluation,
early stopping, checkpoints) and a shard of every batch (data-parallel workers).

The batch order is a pure function of ``(seed, epoch)``: step ``s`` always sees the same
examples, so a run resumed from a checkpoint at step ``s`` continues exactly as an
uninterrupted one (torch's random numbers, e.g. dropout's, are seeded by the step too), and N
data-parallel workers together see the batches one process would.
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.config import coerce_enums, config_to_dict
from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.model import Model, first_tensor
from slimkit.progress import progress
from slimkit.registry import Registry


class Optimizer(str, enum.Enum):
    ADAM = "adam"
    ADAMW = "adamw"
    SGD = "sgd"  # momentum 0.9, Nesterov


class Schedule(str, enum.Enum):
    COSINE = "cosine"  # the learning rate annealed to 0 over the run's steps
    CONSTANT = "constant"


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Args:
        epochs: passes over the data.
        lr: learning rate (see ``schedule``).
        optimizer: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9, Nesterov).
        batch_size: examples per batch (across all data-parallel workers).
        weight_decay: L2 penalty (decoupled for ``adamw``).
        seed: seeds the batch order and the run's random numbers.
        schedule: ``cosine`` (annealed to 0 over the run) or ``constant``.
        max_batches: at most this many batches per epoch (None: the whole data).
        max_steps: at most this many steps in all (None: ``epochs`` full passes).
        threads: torch threads while training, restored afterwards (None: as they are).

    Example:
        >>> TrainConfig(epochs=2, optimizer="sgd").optimizer
        <Optimizer.SGD: 'sgd'>
    """

    epochs: int = 1
    lr: float = 1e-3
    optimizer: Optimizer = Optimizer.ADAM
    batch_size: int = 64
    weight_decay: float = 0.0
    seed: int = 0
    schedule: Schedule = Schedule.COSINE
    max_batches: int | None = None
    max_steps: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        coerce_enums(self, {"optimizer": Optimizer, "schedule": Schedule})
        if self.epochs < 0 or self.batch_size < 1:
            raise InputError(f"training needs epochs >= 0 and batch_size >= 1 (got "
                             f"{self.epochs}, {self.batch_size})")
        if not (math.isfinite(self.lr) and self.lr > 0) or self.weight_decay < 0:
            raise InputError(f"training needs lr > 0 and weight_decay >= 0 (got {self.lr}, "
                             f"{self.weight_decay})")
        for name in ("max_batches", "max_steps", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be >= 1 or None, got {value}")

    def steps_per_epoch(self, examples: int) -> int:
        per_epoch = math.ceil(examples / self.batch_size)
        return min(per_epoch, self.max_batches or per_epoch)

    def total_steps(self, examples: int) -> int:
        total = self.epochs * self.steps_per_epoch(examples)
        return min(total, self.max_steps) if self.max_steps else total

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


MakeOptimizer = Callable[[Sequence[nn.Parameter], TrainConfig], torch.optim.Optimizer]
OPTIMIZERS: Registry[MakeOptimizer] = Registry("optimizer")
OPTIMIZERS.register("adam")(lambda params, c: torch.optim.Adam(
    params, lr=c.lr, weight_decay=c.weight_decay))
OPTIMIZERS.register("adamw")(lambda params, c: torch.optim.AdamW(
    params, lr=c.lr, weight_decay=c.weight_decay))
OPTIMIZERS.register("sgd")(lambda params, c: torch.optim.SGD(
    params, lr=c.lr, momentum=0.9, nesterov=True, weight_decay=c.weight_decay))


@dataclass(frozen=True)
class TrainBatch:
    """One batch as a loss sees it: the named inputs, the model's positional tensors, the labels
    (or None) and, when a teacher is set (``slimkit.train.hooks``), the teacher's first output."""

    inputs: dict[str, np.ndarray]
    args: tuple[torch.Tensor, ...]
    labels: torch.Tensor | None
    teacher_outputs: torch.Tensor | None = None


LossStep = Callable[[nn.Module, TrainBatch], torch.Tensor]
"""``loss(module, batch) -> scalar``: runs the forward pass and returns the batch's loss."""
BatchHook = Callable[[TrainBatch], TrainBatch]
"""``hook(batch) -> batch``: adds to a batch before the loss sees it (a teacher's outputs)."""
AfterStep = Callable[[int, float], bool]
"""``after(steps_done, loss) -> stop``: evaluation, early stopping, checkpoints."""


def cross_entropy(module: nn.Module, batch: TrainBatch) -> torch.Tensor:
    """The default loss: cross-entropy of the first output with the labels."""
    if batch.labels is None:
        raise InputError("training with the built-in cross-entropy needs labelled data (a .npz "
                         "with 'labels', or builtin:digits); otherwise pass a loss")
    return nn.functional.cross_entropy(first_tensor(module(*batch.args)), batch.labels)


def batch_indices(examples: int, config: TrainConfig, step: int) -> np.ndarray:
    """The examples of global ``step``: epoch ``e``'s order is a permutation seeded by
    ``(seed, e)``, so any step's batch is known without replaying the run.

    Example:
        >>> c = TrainConfig(batch_size=4, seed=1)
        >>> sorted(np.concatenate([batch_indices(8, c, s) for s in (0, 1)]).tolist())
        [0, 1, 2, 3, 4, 5, 6, 7]
    """
    epoch, within = divmod(step, config.steps_per_epoch(examples))
    order = np.random.default_rng((config.seed, epoch)).permutation(examples)
    return order[within * config.batch_size:(within + 1) * config.batch_size]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` torch threads (None: unchanged), then restore the setting
    (small models train ~30x faster on one thread than on two busy ones, measured here)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Trainer:
    """A training run of ``model.module`` (in place) on ``data``.

    Args:
        model: the model whose module trains (its input names order the batch tensors).
        data: training examples.
        config: epochs, optimizer, learning rate, schedule, batch size, seed, threads.
        loss: the batch loss (default :func:`cross_entropy`).
        parameters: what trains (default: every parameter that requires grad), plus any
            extra tensors (adapters, learned quantization scales).
        shard: ``(rank, workers)`` of a data-parallel run: this worker's share of every
            batch, its loss weighted so that DDP's mean gradient is the whole batch's.
        before_step: called with the step number before every step (masks, weight sharing).
        batch_hook: completes every batch before the loss (e.g. a teacher's outputs).

    Example:
        >>> from slimkit.testing import tiny_model
        >>> m = tiny_model("mlp")
        >>> data = Dataset({"input": np.ones((8, 8), np.float32)}, np.zeros(8, np.int64))
        >>> losses = Trainer(m, data, TrainConfig(epochs=2, lr=0.1)).run()
        >>> losses[1] < losses[0]
        True
    """

    def __init__(self, model: Model, data: Dataset, config: TrainConfig,
                 loss: LossStep | None = None, *, parameters: Sequence[Any] | None = None,
                 shard: tuple[int, int] = (0, 1),
                 before_step: Callable[[int], None] | None = None,
                 batch_hook: BatchHook | None = None, description: str = "training") -> None:
        if len(data) == 0:
            raise InputError("training needs at least one example")
        self.model, self.data, self.config = model, data, config
        self.module = model.require_module("training")
        self.loss = loss or cross_entropy
        self.shard, self.before_step, self.batch_hook = shard, before_step, batch_hook
        self.description = description
        trained = list(parameters) if parameters is not None else [
            p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = OPTIMIZERS.get(config.optimizer.value)(trained, config)
        self.total = config.total_steps(len(data))
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, max(self.total, 1)) if config.schedule == Schedule.COSINE else None)

    def run(self, start: int = 0, after_step: AfterStep | None = None) -> list[float]:
        """Steps ``start`` to the end (or until ``after_step`` says stop); the mean loss of
        every epoch run. The module is left in eval mode; the global RNG state and the torch
        thread count are restored."""
        per_epoch = self.config.steps_per_epoch(len(self.data))
        epoch_losses: list[float] = []
        total, count = 0.0, 0
        with torch.random.fork_rng(), torch.enable_grad(), torch_threads(self.config.threads):
            self.module.train()
            try:
                steps = progress(range(start, self.total), self.description,
                                 self.total - start)
                for step in steps:
                    loss = self.step(step)
                    if loss is not None:
                        total, count = total + loss, count + 1
                    if (step + 1) % per_epoch == 0 or step + 1 == self.total:
                        epoch_losses.append(total / max(count, 1))
                        total, count = 0.0, 0
                    if after_step is not None and after_step(step + 1, loss or 0.0):
                        break
            finally:
                self.module.eval()
        return epoch_losses

    def step(self, step: int) -> float | None:
        """One optimizer step on the batch of ``step``; its loss (None: no example for this
        worker, or a lone example BatchNorm cannot train on)."""
        idx = batch_indices(len(self.data), self.config, step)
        if len(idx) == 1 and len(self.data) > 1:
            idx = idx[:0]
        rank, workers = self.shard
        weight = 1.0
        if workers > 1:
            if len(idx) < workers:
                return None
            weight = len(range(rank, len(idx), workers)) * workers / len(idx)
            idx = idx[rank::workers]
        if len(idx) == 0:
            return None
        # the step's random numbers (dropout) depend on the step alone: a resumed run draws
        # what the uninterrupted one drew
        torch.manual_seed((self.config.seed * 1_000_003 + step) * 31 + rank)
        if self.before_step is not None:
            self.before_step(step)
        batch = self._batch(idx)
        loss = self.loss(self.module, batch)
        if not torch.isfinite(loss):
            raise InputError(f"the training loss became {float(loss)} at step {step}; lower "
                             "the learning rate and try again")
        if weight != 1.0:  # recorded weighted too: the workers' mean is the batch's mean loss
            loss = loss * weight
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.detach())

    def _batch(self, idx: np.ndarray) -> TrainBatch:
        inputs = {k: np.ascontiguousarray(v[idx]) for k, v in self.data.inputs.items()}
        labels = None if self.data.labels is None else torch.as_tensor(
            np.asarray(self.data.labels)[idx], dtype=torch.long)
        batch = TrainBatch(inputs, self.model.torch_args(inputs), labels)
        return self.batch_hook(batch) if self.batch_hook is not None else batch


def fit(model: Model, data: Dataset, config: TrainConfig | None = None,
        loss: LossStep | None = None, **options: Any) -> list[float]:
    """Train ``model.module`` in place; the mean loss of every epoch (see :class:`Trainer`)."""
    return Trainer(model, data, config or TrainConfig(), loss, **options).run()
