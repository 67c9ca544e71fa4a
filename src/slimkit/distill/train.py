"""Distillation on the one training loop (``slimkit.train.loop``): the batch loss (output loss
plus hint losses of tapped features), periodic validation with early stopping, and checkpoints
that resume to the very same result as an uninterrupted run (the loop's batch order and random
numbers are functions of the step; model, adapters and optimizer state are saved).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.distill.config import DistillConfig
from slimkit.distill.hints import Adapters, tap
from slimkit.distill.losses import LOSSES, hint_loss
from slimkit.errors import InputError
from slimkit.model import Model, TensorSpec, first_tensor
from slimkit.train import checkpoint as ckpt
from slimkit.train.loop import Optimizer, Schedule, TrainBatch, TrainConfig, Trainer

log = logging.getLogger(__name__)

# fields that must agree between a checkpoint and the run resuming it
RESUME_FIELDS = ("loss", "temperature", "alpha", "features", "feature_weight", "output_adapter",
                 "lr", "optimizer", "weight_decay", "batch_size", "seed")

Metric = Callable[[nn.Module, Adapters], float]


@dataclass
class Setup:
    """What one run trains and against what: the student (trained in place), the frozen
    teacher, the adapters, the input names in call order, the config."""

    student: nn.Module
    teacher: nn.Module
    adapters: Adapters
    input_names: tuple[str, ...]
    config: DistillConfig


@dataclass
class TrainState:
    step: int = 0
    losses: list[dict[str, float]] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    resumed_from: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def train_config(config: DistillConfig) -> TrainConfig:
    """The loop's config: a constant learning rate (resumable without scheduler state)."""
    return TrainConfig(config.epochs, config.lr, Optimizer(config.optimizer), config.batch_size,
                       config.weight_decay, config.seed, Schedule.CONSTANT,
                       max_steps=config.max_steps)


def total_steps(n: int, config: DistillConfig) -> int:
    return train_config(config).total_steps(n)


def compute_loss(setup: Setup, args: tuple[torch.Tensor, ...],
                 labels: torch.Tensor | None) -> torch.Tensor:
    """The configured output loss plus the weighted hint losses for one batch."""
    config = setup.config
    s_names = tuple(s for s, _ in config.features)
    t_names = tuple(t for _, t in config.features)
    with tap(setup.teacher, t_names, "teacher") as t_seen, torch.no_grad():
        teacher_out = first_tensor(setup.teacher(*args))
    with tap(setup.student, s_names, "student") as s_seen:
        student_out = setup.adapters.adapt("output", first_tensor(setup.student(*args)))
    loss = LOSSES.get(config.loss)(student_out, teacher_out, labels, config)
    for s_name, t_name in config.features:
        adapted = setup.adapters.adapt(s_name, s_seen[s_name])
        loss = loss + config.feature_weight * hint_loss(adapted, t_seen[t_name])
    return loss


def train(setup: Setup, data: Dataset, metric: Metric | None,
          checkpoint: Path | None = None, resume: bool = False) -> TrainState:
    """Train ``setup.student`` (in place); returns the run's state. With a metric the best
    student seen (highest metric) is restored at the end."""
    config = setup.config
    params = [p for p in [*setup.student.parameters(), *setup.adapters.parameters()]
              if p.requires_grad]
    student = Model("student", "distillation", tuple(TensorSpec(n, ("batch",))
                                                      for n in setup.input_names),
                    module=setup.student)

    def loss(_module: nn.Module, batch: TrainBatch) -> torch.Tensor:
        return compute_loss(setup, batch.args, batch.labels)

    trainer = Trainer(student, data, train_config(config), loss, parameters=params,
                      description="distilling")
    optimizer = trainer.optimizer
    state, best = TrainState(), None
    if checkpoint is not None and resume:
        state, best = _resume(setup, optimizer, checkpoint)
    total = trainer.total
    setup.teacher.eval()
    setup.adapters.train()
    window: list[float] = []
    log_every = max(1, total // 20)

    def after_step(done: int, value: float) -> bool:
        nonlocal best, window
        state.step = done
        window.append(value)
        if done % log_every == 0 or done == total:
            state.losses.append({"step": done, "loss": sum(window) / len(window)})
            window = []
        if metric is not None and _due_eval(done, len(data), total, config):
            best = _evaluate(setup, metric, state, best)
        if checkpoint is not None and (state.stopped_early or done == total or (
                config.checkpoint_every and done % config.checkpoint_every == 0)):
            _save(setup, optimizer, state, best, checkpoint)
        return state.stopped_early

    if not state.stopped_early and state.step < total:
        trainer.run(state.step, after_step)
    if best is not None:
        setup.student.load_state_dict(best["student"])
        setup.adapters.load_state_dict(best["adapters"])
    setup.student.eval()
    return state


def _due_eval(step: int, n: int, total: int, config: DistillConfig) -> bool:
    every = config.eval_every or math.ceil(n / config.batch_size)
    return step % every == 0 or step == total


def _evaluate(setup: Setup, metric: Metric, state: TrainState,
              best: dict[str, Any] | None) -> dict[str, Any] | None:
    setup.student.eval()
    setup.adapters.eval()
    with torch.no_grad():
        value = float(metric(setup.student, setup.adapters))
    setup.student.train()
    setup.adapters.train()
    state.evaluations.append({"step": state.step, "metric": value})
    if state.best_metric is None or value > state.best_metric:
        state.best_metric, state.best_step, state.bad_evals = value, state.step, 0
        return {"student": copy.deepcopy(setup.student.state_dict()),
                "adapters": copy.deepcopy(setup.adapters.state_dict())}
    state.bad_evals += 1
    if setup.config.patience and state.bad_evals >= setup.config.patience:
        log.info("early stop at step %d: no better validation metric in %d evaluations",
                 state.step, state.bad_evals)
        state.stopped_early = True
    return best


def _save(setup: Setup, optimizer: torch.optim.Optimizer, state: TrainState,
          best: dict[str, Any] | None, folder: Path) -> None:
    optim_tensors, optim_meta = ckpt.optimizer_to_flat(optimizer)
    tensors = {**ckpt.prefixed("student", setup.student.state_dict()),
               **ckpt.prefixed("adapters", setup.adapters.state_dict()),
               **optim_tensors}
    if best is not None:
        tensors.update(ckpt.prefixed("best.student", best["student"]))
        tensors.update(ckpt.prefixed("best.adapters", best["adapters"]))
    ckpt.save_checkpoint(folder, tensors, {"state": state.to_dict(), "optimizer": optim_meta,
                                           "config": setup.config.to_dict(),
                                           "has_best": best is not None})


def _resume(setup: Setup, optimizer: torch.optim.Optimizer,
            folder: Path) -> tuple[TrainState, dict[str, Any] | None]:
    loaded = ckpt.load_checkpoint(folder)
    if loaded is None:
        return TrainState(), None
    tensors, document = loaded
    saved, now = document.get("config", {}), setup.config.to_dict()
    changed = [k for k in RESUME_FIELDS if saved.get(k) != now.get(k)]
    if changed:
        raise InputError(f"the checkpoint in '{folder}' was written with other settings "
                         f"({', '.join(changed)}); use the same settings or another folder")
    try:
        setup.student.load_state_dict(ckpt.unprefixed("student", tensors))
        setup.adapters.load_state_dict(ckpt.unprefixed("adapters", tensors))
    except RuntimeError as exc:
        raise InputError(f"the checkpoint in '{folder}' does not fit this student: "
                         f"{str(exc).splitlines()[0]}") from None
    ckpt.optimizer_from_flat(optimizer, tensors, document["optimizer"])
    state = TrainState(**document["state"])
    state.resumed_from = state.step
    best = None
    if document.get("has_best"):
        best = {"student": ckpt.unprefixed("best.student", tensors),
                "adapters": ckpt.unprefixed("best.adapters", tensors)}
    return state, best
