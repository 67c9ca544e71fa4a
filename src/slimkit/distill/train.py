"""The distillation loop: deterministic batches (the order of epoch e is a permutation seeded by
``seed`` and e), periodic validation with early stopping, and checkpoints that resume to the
very same result as an uninterrupted run (model, adapters, optimizer and RNG state are saved).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.distill import checkpoint as ckpt
from slimkit.distill.config import DistillConfig
from slimkit.distill.hints import Adapters, tap
from slimkit.distill.losses import LOSSES, hint_loss
from slimkit.errors import InputError
from slimkit.progress import progress
from slimkit.registry import Registry

log = logging.getLogger(__name__)

MakeOptimizer = Callable[[list[nn.Parameter], float, float], torch.optim.Optimizer]
OPTIMIZERS: Registry[MakeOptimizer] = Registry("optimizer")
OPTIMIZERS.register("adam")(lambda p, lr, wd: torch.optim.Adam(p, lr=lr, weight_decay=wd))
OPTIMIZERS.register("adamw")(lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd))
OPTIMIZERS.register("sgd")(
    lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd))

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


def first_tensor(out: Any) -> torch.Tensor:
    """A module's main output: the tensor itself, or the first tensor of a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise InputError(f"distillation needs models that return a tensor; got {type(out).__name__}")


def batch_indices(n: int, config: DistillConfig, step: int) -> torch.Tensor:
    """The example indices of global ``step``: epoch-wise permutations seeded by the seed."""
    per_epoch = math.ceil(n / config.batch_size)
    epoch, within = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return order[within * config.batch_size:(within + 1) * config.batch_size]


def total_steps(n: int, config: DistillConfig) -> int:
    steps = math.ceil(n / config.batch_size) * config.epochs
    return min(steps, config.max_steps) if config.max_steps else steps


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
    tensors = {k: torch.from_numpy(v) for k, v in data.inputs.items()}
    labels = None if data.labels is None else torch.from_numpy(data.labels)
    params = [p for p in [*setup.student.parameters(), *setup.adapters.parameters()]
              if p.requires_grad]
    optimizer = OPTIMIZERS.get(config.optimizer)(params, config.lr, config.weight_decay)
    state, best = TrainState(), None
    total = total_steps(len(data), config)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        if checkpoint is not None and resume:
            state, best = _resume(setup, optimizer, checkpoint)
        setup.teacher.eval()
        setup.student.train()
        setup.adapters.train()
        window: list[float] = []
        log_every = max(1, total // 20)
        for step in _steps(state, total):
            idx = batch_indices(len(data), config, step)
            args = tuple(tensors[name][idx] for name in setup.input_names)
            optimizer.zero_grad(set_to_none=True)
            loss = compute_loss(setup, args, None if labels is None else labels[idx])
            if not torch.isfinite(loss):
                raise InputError(f"the distillation loss became {float(loss)} at step {step}; "
                                 "lower lr (or the temperature) and try again")
            loss.backward()
            optimizer.step()
            state.step = step + 1
            window.append(float(loss.detach()))
            if state.step % log_every == 0 or state.step == total:
                state.losses.append({"step": state.step, "loss": sum(window) / len(window)})
                window = []
            if metric is not None and _due_eval(state.step, len(data), total, config):
                best = _evaluate(setup, metric, state, best)
            if checkpoint is not None and (state.stopped_early or state.step == total or (
                    config.checkpoint_every and state.step % config.checkpoint_every == 0)):
                _save(setup, optimizer, state, best, checkpoint)
            if state.stopped_early:
                break
    if best is not None:
        setup.student.load_state_dict(best["student"])
        setup.adapters.load_state_dict(best["adapters"])
    setup.student.eval()
    return state


def _steps(state: TrainState, total: int) -> Iterator[int]:
    if state.stopped_early or state.step >= total:
        return iter(())
    return iter(progress(range(state.step, total), "distilling", total=total - state.step))


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
               **optim_tensors, "rng": torch.get_rng_state()}
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
    torch.set_rng_state(tensors["rng"])
    state = TrainState(**document["state"])
    state.resumed_from = state.step
    best = None
    if document.get("has_best"):
        best = {"student": ckpt.unprefixed("best.student", tensors),
                "adapters": ckpt.unprefixed("best.adapters", tensors)}
    return state, best
