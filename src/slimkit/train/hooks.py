"""What fine-tuning is told: its config, and the hooks between the one training loop and a
technique (the loss of the outputs, a teacher whose outputs reach it, a regulariser). Shared by
one-process fine-tuning (``finetune``) and data-parallel workers (``ddp``, ``replica``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.nn import functional as F

from slimkit.config import coerce_enums, config_to_dict
from slimkit.errors import DataError, InputError
from slimkit.model import Model, eval_mode, first_tensor
from slimkit.train.loop import BatchHook, LossStep, Optimizer, Schedule, TrainBatch, TrainConfig

LossFn = Callable[[Any, TrainBatch], torch.Tensor]


Penalty = Callable[[torch.nn.Module], torch.Tensor]


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune after compressing.

    Args:
        epochs: passes over the data after every pruning step (0: prune only).
        lr: learning rate (cosine-annealed to 0 over each step's epochs).
        optimizer: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9, Nesterov).
        batch_size: examples per training batch.
        iterations: pruning steps of ``slimkit.prune.prune_and_finetune``; step k removes up
            to the cubic-schedule share ``cubic_sparsity(k, ratio, iterations)``.
        weight_decay: L2 penalty of the optimizer.
        seed: seeds the shuffling of the data (and the training run).
        max_batches: stop every epoch after this many batches (None: the whole data).
        workers: data-parallel processes (torch DDP, gloo on CPU); each trains on its share of
            every ``batch_size`` batch. 1: this process only.

    Example:
        >>> FinetuneConfig(epochs=2, optimizer="sgd").optimizer
        <Optimizer.SGD: 'sgd'>
    """

    epochs: int = 1
    lr: float = 1e-3
    optimizer: Optimizer = Optimizer.ADAM
    batch_size: int = 64
    iterations: int = 1
    weight_decay: float = 0.0
    seed: int = 0
    max_batches: int | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        coerce_enums(self, {"optimizer": Optimizer})
        if self.iterations < 1:
            raise InputError(f"fine-tuning needs iterations >= 1, got {self.iterations}")
        self.train_config()  # the loop's own checks
        if not 1 <= self.workers <= self.batch_size:
            raise InputError(f"workers must be in [1, batch_size={self.batch_size}] (each "
                             f"worker trains on a share of every batch), got {self.workers}")

    def train_config(self) -> TrainConfig:
        """The loop's config: a cosine schedule over the run."""
        return TrainConfig(self.epochs, self.lr, self.optimizer, self.batch_size,
                           self.weight_decay, self.seed, Schedule.COSINE, self.max_batches)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


@dataclass(frozen=True)
class TrainHooks:
    """What training calls besides the model: the loss (default: cross-entropy with the
    labels), a teacher whose outputs reach the loss through ``TrainBatch.teacher_outputs``,
    and a regulariser added to every batch's loss."""

    loss_fn: LossFn | None = None
    teacher: Model | None = None
    penalty: Penalty | None = None


@dataclass
class TrainResult:
    """The trained model (a copy) and the mean loss of every epoch."""

    model: Model
    losses: list[float] = field(default_factory=list)


def cross_entropy(outputs: Any, batch: TrainBatch) -> torch.Tensor:
    """Cross-entropy of the first output with the labels."""
    if batch.labels is None:
        raise InputError("fine-tuning with the built-in cross-entropy needs labelled data "
                         "(a .npz with 'labels', or builtin:digits); otherwise pass loss_fn")
    return F.cross_entropy(first_tensor(outputs), batch.labels)


def mse_to_teacher(outputs: Any, batch: TrainBatch) -> torch.Tensor:
    """Mean-squared error of the first output to the teacher's (no labels needed)."""
    if batch.teacher_outputs is None:
        raise DataError("mse_to_teacher needs a teacher")
    return F.mse_loss(first_tensor(outputs), batch.teacher_outputs)


def hooks_loss(hooks: TrainHooks) -> LossStep:
    """The loop's loss from the hooks: ``loss_fn`` of the outputs, plus the penalty."""
    loss_fn, penalty = hooks.loss_fn or cross_entropy, hooks.penalty

    def loss(module: torch.nn.Module, batch: TrainBatch) -> torch.Tensor:
        value = loss_fn(module(*batch.args), batch)
        return value + penalty(module) if penalty is not None else value

    return loss


def teacher_outputs(teacher: Model | None) -> BatchHook | None:
    """A batch hook adding ``teacher``'s first output (eval mode, no gradients)."""
    if teacher is None:
        return None
    module = teacher.require_module("distillation")

    def add(batch: TrainBatch) -> TrainBatch:
        with eval_mode(module), torch.no_grad():
            outputs = first_tensor(module(*teacher.torch_args(batch.inputs)))
        return replace(batch, teacher_outputs=outputs)

    return add


def check_hooks(hooks: TrainHooks) -> None:
    """Refuse hooks that cannot train (shared by one-process and data-parallel runs)."""
    if hooks.teacher is not None and hooks.loss_fn is None:
        raise InputError("a teacher needs a loss_fn that uses its outputs (the built-in "
                         "cross-entropy ignores it): pass a distillation loss")
