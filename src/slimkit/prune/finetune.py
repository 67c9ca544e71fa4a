"""Fine-tuning to recover accuracy, and iterative prune -> fine-tune.

``finetune`` trains a copy of a model on the user's data (cross-entropy with the labels built
in, or the user's ``loss_fn``); ``prune_and_finetune`` reaches the pruning ratio in
``iterations`` steps along the cubic schedule of Zhu & Gupta, fine-tuning after each step.
Unstructured masks survive training (``torch.nn.utils.prune`` re-applies them at every forward).

Distillation plugs in through two hooks: ``teacher`` (a Model run on every batch under
``no_grad``; its first output lands in ``TrainBatch.teacher_outputs``) and
``loss_fn(student_outputs, batch) -> loss``. ``slimkit.distill`` supplies such a loss.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from slimkit.config import coerce_enums, config_to_dict
from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.model import Model, Task
from slimkit.progress import progress
from slimkit.prune.config import PruneConfig, PruneMode
from slimkit.prune.trace import eval_mode
from slimkit.registry import Registry

if TYPE_CHECKING:
    from slimkit.prune.api import PruneResult


class Optimizer(str, enum.Enum):
    SGD = "sgd"  # with momentum and Nesterov
    ADAM = "adam"


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune after pruning.

    Args:
        epochs: passes over the data after every pruning step (0: prune only).
        lr: learning rate (cosine-annealed to 0 over each step's epochs).
        optimizer: ``adam`` or ``sgd`` (momentum 0.9, Nesterov).
        batch_size: examples per training batch.
        iterations: pruning steps; step k removes up to the cubic-schedule share
            ``cubic_sparsity(k, ratio, iterations)`` of the original channels or weights.
        weight_decay: L2 penalty of the optimizer.
        seed: seeds the shuffling of the data (and the training run).
        max_batches: stop every epoch after this many batches (None: the whole data).
        workers: data-parallel processes (``slimkit.distributed``: torch DDP, gloo on CPU);
            each trains on its share of every ``batch_size`` batch. 1: this process only.

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
        if self.epochs < 0 or self.iterations < 1 or self.batch_size < 1:
            raise InputError("fine-tuning needs epochs >= 0, iterations >= 1 and "
                             f"batch_size >= 1 (got {self.epochs}, {self.iterations}, "
                             f"{self.batch_size})")
        if not (math.isfinite(self.lr) and self.lr > 0) or self.weight_decay < 0:
            raise InputError(f"fine-tuning needs lr > 0 and weight_decay >= 0 (got {self.lr}, "
                             f"{self.weight_decay})")
        if self.max_batches is not None and self.max_batches < 1:
            raise InputError(f"max_batches must be >= 1 or None, got {self.max_batches}")
        if not 1 <= self.workers <= self.batch_size:
            raise InputError(f"workers must be in [1, batch_size={self.batch_size}] (each "
                             f"worker trains on a share of every batch), got {self.workers}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


@dataclass(frozen=True)
class TrainBatch:
    """One training batch as a loss sees it: named inputs, labels (or None) and, when a
    teacher is set, the teacher's first output on the same inputs."""

    inputs: dict[str, np.ndarray]
    labels: torch.Tensor | None
    teacher_outputs: torch.Tensor | None = None


LossFn = Callable[[Any, TrainBatch], torch.Tensor]
"""``loss_fn(student_outputs, batch) -> scalar tensor`` (the distillation hook)."""
Penalty = Callable[[torch.nn.Module], torch.Tensor]
"""``penalty(module) -> scalar tensor`` added to the loss (sparse training)."""


@dataclass(frozen=True)
class TrainHooks:
    """What training calls besides the model: the loss (default :func:`cross_entropy`), a
    teacher whose outputs reach the loss through ``TrainBatch.teacher_outputs``, and a
    regulariser added to every batch's loss. Distillation sets ``loss_fn`` and ``teacher``.
    """

    loss_fn: LossFn | None = None
    teacher: Model | None = None
    penalty: Penalty | None = None

OPTIMIZERS: Registry[Callable[[Any, FinetuneConfig], torch.optim.Optimizer]] = \
    Registry("optimizer")
OPTIMIZERS.register("adam")(lambda params, c: torch.optim.Adam(
    params, lr=c.lr, weight_decay=c.weight_decay))
OPTIMIZERS.register("sgd")(lambda params, c: torch.optim.SGD(
    params, lr=c.lr, momentum=0.9, nesterov=True, weight_decay=c.weight_decay))


def cross_entropy(outputs: Any, batch: TrainBatch) -> torch.Tensor:
    """The built-in loss: cross-entropy of the first output with the labels."""
    if batch.labels is None:
        raise InputError("fine-tuning with the built-in cross-entropy needs labelled data "
                         "(a .npz with 'labels', or builtin:digits); otherwise pass loss_fn")
    return F.cross_entropy(first_tensor(outputs), batch.labels)


@dataclass
class TrainResult:
    """The trained model (a copy) and the mean loss of every epoch."""

    model: Model
    losses: list[float] = field(default_factory=list)


def finetune(model: Model, data: Dataset, config: FinetuneConfig | None = None,
             hooks: TrainHooks | None = None) -> TrainResult:
    """Train a copy of ``model`` on ``data``; ``model`` itself is not modified.

    Args:
        model: a torch model (masks from unstructured pruning are kept and stay applied).
        data: training examples; labels are needed by the built-in cross-entropy.
        config: epochs, optimizer, learning rate, batch size, seed.
        hooks: the loss (``loss_fn(student_outputs, batch)``, default
            :func:`cross_entropy`), a teacher whose outputs reach the loss (distillation)
            and a regulariser.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> m = tiny_model("mlp")
        >>> data = Dataset({"input": np.ones((8, 8), np.float32)}, np.zeros(8, np.int64))
        >>> r = finetune(m, data, FinetuneConfig(epochs=2, lr=0.1))
        >>> r.losses[1] < r.losses[0]
        True
    """
    from slimkit.prune.unstructured import copy_masked

    config, hooks = config or FinetuneConfig(), hooks or TrainHooks()
    if len(data) == 0:
        raise InputError("fine-tuning needs at least one example")
    check_hooks(hooks)
    if config.workers > 1 and config.epochs > 0:
        from slimkit.distributed import finetune_ddp

        return finetune_ddp(model, data, config, hooks)
    module = copy_masked(model.require_module("fine-tuning"))
    trained = replace(model, module=module)
    losses = _train(trained, data, config, hooks)
    module.eval()
    return TrainResult(trained, losses)


def check_hooks(hooks: TrainHooks) -> None:
    """Refuse hooks that cannot train (shared by one-process and data-parallel runs)."""
    if hooks.teacher is not None and hooks.loss_fn is None:
        raise InputError("a teacher needs a loss_fn that uses its outputs (the built-in "
                         "cross-entropy ignores it): pass a distillation loss")


def _train(model: Model, data: Dataset, config: FinetuneConfig, hooks: TrainHooks,
           shard: tuple[int, int] = (0, 1)) -> list[float]:
    """Train ``model.module`` in place; ``shard = (rank, workers)`` trains one data-parallel
    worker's share of every batch (the module is then DDP-wrapped by ``slimkit.distributed``)."""
    loss_fn, penalty = hooks.loss_fn or cross_entropy, hooks.penalty
    module = model.require_module("fine-tuning")
    optimizer = OPTIMIZERS.get(config.optimizer.value)(
        [p for p in module.parameters() if p.requires_grad], config)
    per_epoch = math.ceil(len(data) / config.batch_size)
    steps = min(per_epoch, config.max_batches or per_epoch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(config.epochs * steps, 1))
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    with torch.random.fork_rng(), torch.enable_grad():
        torch.manual_seed(config.seed + shard[0])
        module.train()
        for _ in progress(range(config.epochs), "fine-tuning", config.epochs):
            total, count = 0.0, 0
            batches = _shuffled(data, rng, config.batch_size, steps)
            for inputs, labels, weight in _sharded(batches, *shard):
                batch = _batch(inputs, labels, hooks.teacher)
                loss = loss_fn(module(*model.torch_args(inputs)), batch)
                if penalty is not None:
                    loss = loss + penalty(module)
                if weight != 1.0:
                    loss = loss * weight
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total, count = total + float(loss.detach()), count + 1
            losses.append(total / max(count, 1))
    return losses


def _shuffled(data: Dataset, rng: np.random.Generator, batch_size: int,
              steps: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
    """``steps`` batches in a fresh random order (a last batch of one example is dropped
    when there are more: BatchNorm cannot train on it)."""
    order = rng.permutation(len(data))
    for start in range(0, steps * batch_size, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) == 0 or (len(idx) == 1 and len(data) > 1):
            return
        inputs = {k: np.ascontiguousarray(v[idx]) for k, v in data.inputs.items()}
        yield inputs, None if data.labels is None else data.labels[idx]


def _sharded(batches: Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]], rank: int,
             workers: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None, float]]:
    """Worker ``rank``'s examples of every batch (``rank, rank + workers, ...``) and the weight
    ``local * workers / global`` that makes DDP's mean of the workers' gradients the gradient
    of the whole batch's mean loss. Every worker skips a batch with fewer examples than workers.
    """
    for inputs, labels in batches:
        n = len(next(iter(inputs.values())))
        if workers == 1:
            yield inputs, labels, 1.0
        elif n >= workers:
            local = {k: np.ascontiguousarray(v[rank::workers]) for k, v in inputs.items()}
            mine = len(range(rank, n, workers))
            yield local, None if labels is None else labels[rank::workers], mine * workers / n


def _batch(inputs: dict[str, np.ndarray], labels: np.ndarray | None,
           teacher: Model | None) -> TrainBatch:
    target = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if teacher is None:
        return TrainBatch(inputs, target)
    module = teacher.require_module("distillation")
    with eval_mode(module), torch.no_grad():
        outputs = first_tensor(module(*teacher.torch_args(inputs)))
    return TrainBatch(inputs, target, outputs)


def first_tensor(output: Any) -> torch.Tensor:
    """A model's first output tensor (logits of a classifier)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict) and output:
        return first_tensor(next(iter(output.values())))
    raise InputError("the model's first output is not a tensor; pass a loss_fn that reads "
                     "its outputs")


def metric(model: Model, data: Dataset, reference: Model | None = None,
           batch_size: int = 256) -> float:
    """Top-1 accuracy with labels; without them, agreement with ``reference``'s top-1 for a
    classifier or the mean cosine similarity of the outputs otherwise.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> m = tiny_model("mlp")
        >>> metric(m, Dataset({"input": np.ones((4, 8), np.float32)}), reference=m)
        1.0
    """
    outputs = outputs_of(model, data, batch_size)
    if data.labels is not None:
        return float((outputs.argmax(1) == torch.as_tensor(data.labels)).float().mean())
    if reference is None:
        raise InputError("a metric on unlabelled data needs the reference model")
    ref = outputs_of(reference, data, batch_size)
    if model.task == Task.CLASSIFICATION:
        return float((outputs.argmax(-1) == ref.argmax(-1)).float().mean())
    return float(F.cosine_similarity(outputs.flatten(1), ref.flatten(1)).mean())


def outputs_of(model: Model, data: Dataset, batch_size: int = 256) -> torch.Tensor:
    """The first output of ``model`` on all of ``data`` (eval mode, no gradients)."""
    module = model.require_module("evaluation")
    parts = []
    with eval_mode(module), torch.no_grad():
        for inputs, _ in data.batches(batch_size):
            parts.append(first_tensor(module(*model.torch_args(inputs))))
    return torch.cat(parts)


def prune_and_finetune(model: Model, config: PruneConfig | None = None,
                       data: Dataset | None = None, finetune_config: FinetuneConfig | None = None,
                       hooks: TrainHooks | None = None, *,
                       eval_data: Dataset | None = None) -> PruneResult:
    """Prune ``model`` in ``finetune_config.iterations`` steps, fine-tuning after each.

    Step ``k`` of ``n`` brings the removed share to ``cubic_sparsity(k, ratio, n)`` of the
    original (most of the pruning early, while there is training left to recover). A
    structured result carries one plan from the original architecture to the final one (the
    steps' plans composed), so it saves and loads like a one-shot result. ``eval_data``
    (labels: accuracy; otherwise agreement with the original) is measured before fine-tuning
    and after every step, into the report's ``finetune`` section.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
        >>> data = Dataset({"input": x}, np.arange(16) % 4)
        >>> r = prune_and_finetune(tiny_model("cnn"), PruneConfig(ratio=0.5, round_to=2), data,
        ...                        FinetuneConfig(epochs=1, iterations=2))
        >>> r.model.module.conv.out_channels, len(r.sections["finetune"]["steps"])
        (4, 2)
    """
    from slimkit.prune.api import PruneResult, groups_section, prune_once, size_section
    from slimkit.prune.plan import compose_plans
    from slimkit.prune.unstructured import finalize, has_masks

    config, settings = config or PruneConfig(), finetune_config or FinetuneConfig()
    if data is None or len(data) == 0:
        raise InputError("fine-tuning needs training data (a Dataset, or --data)")
    original = metric(model, eval_data, model) if eval_data is not None else None
    current, plan, steps, last = model, None, [], None
    for k in range(1, settings.iterations + 1):
        step = _step_config(config, k, settings.iterations)
        if has_masks(current.require_module("pruning")):
            current = finalize(current)  # zeros rank lowest: earlier masks are kept
        last = prune_once(current, step, data)
        structured = config.mode == PruneMode.STRUCTURED
        plan = compose_plans(plan, last.plan) if structured and plan else last.plan
        row: dict[str, Any] = {"step": k, "ratio": round(_cumulative(config.ratio, k,
                                                                     settings.iterations), 4)}
        current = last.model
        if eval_data is not None:
            row["metric_pruned"] = round(metric(current, eval_data, model), 5)
        if settings.epochs:
            trained = finetune(current, data, replace(settings, seed=settings.seed + k - 1),
                               hooks)
            current, row["losses"] = trained.model, [round(v, 5) for v in trained.losses]
            if eval_data is not None:
                row["metric_finetuned"] = round(metric(current, eval_data, model), 5)
        steps.append(row)
    if last is None or plan is None:
        raise InputError("no pruning step ran")  # unreachable: iterations >= 1
    sections = {**last.sections, "config": config.to_dict()}
    if config.mode == PruneMode.STRUCTURED:
        sections.update(size=size_section(model, current), groups=groups_section(plan))
    final_metric = steps[-1].get("metric_finetuned", steps[-1].get("metric_pruned"))
    sections["finetune"] = {"config": settings.to_dict(), "steps": steps,
                            "metric_original": original, "metric_final": final_metric,
                            "loss": "custom" if hooks and hooks.loss_fn else "cross-entropy"}
    return PruneResult(current, plan, sections)


def _cumulative(final: float, k: int, n: int) -> float:
    """The share removed after step ``k`` of ``n`` (the cubic schedule)."""
    from slimkit.prune.unstructured import cubic_sparsity

    if k <= 0 or final == 0:
        return 0.0
    return final if n == 1 else cubic_sparsity(k, final, n)


def _step_config(config: PruneConfig, k: int, n: int) -> PruneConfig:
    """The config of step ``k`` of ``n``: structured steps remove a share of the channels
    left (the model shrinks at every step), unstructured steps mask a share of all weights."""
    def share(final: float) -> float:
        now = _cumulative(final, k, n)
        if config.mode == PruneMode.UNSTRUCTURED:
            return now
        return 1.0 - (1.0 - now) / (1.0 - _cumulative(final, k - 1, n))

    return replace(config, ratio=share(config.ratio),
                   layer_ratios=tuple((rule, share(r)) for rule, r in config.layer_ratios))
