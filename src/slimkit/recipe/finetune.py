"""The fine-tuning stage: a short, seeded training run of a (pruned) torch model on the training
data, with cross-entropy on labels for classifiers and, without labels, mean-squared error to
the original model's outputs (self-distillation). It uses ``slimkit.prune.finetune`` when that
module is installed and offers the same config."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any

from slimkit.config import config_to_dict
from slimkit.data import Dataset
from slimkit.errors import DataError, InputError
from slimkit.model import Model, Task


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune after compression.

    Args:
        epochs: passes over the training data (0 turns the stage off).
        lr: Adam learning rate (cosine schedule down to 0).
        batch_size: examples per step.
        weight_decay: Adam weight decay.
        max_examples: use at most this many training examples (None: all).
        seed: shuffling order; written into the report.

    Example:
        >>> FinetuneConfig(epochs=1).lr
        0.001
    """

    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    max_examples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1:
            raise InputError("finetune epochs must be >= 0 and batch_size >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0) or self.weight_decay < 0:
            raise InputError("finetune lr must be > 0 and weight_decay >= 0")
        if self.max_examples is not None and self.max_examples < 1:
            raise InputError("finetune max_examples must be >= 1 (or null for all)")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def finetune(model: Model, config: FinetuneConfig, train: Dataset | None,
             teacher: Model | None = None) -> tuple[Model, dict[str, Any]]:
    """Fine-tune a copy of ``model``; returns it and a report (first/last epoch loss).

    Example:
        >>> from slimkit.testing import tiny_model
        >>> from slimkit.data import synthetic
        >>> m = tiny_model("mlp")
        >>> _, rep = finetune(m, FinetuneConfig(epochs=1), synthetic(m.inputs, 8), teacher=m)
        >>> rep["loss"]
        'mse_to_original'
    """
    module = model.require_module("fine-tuning")
    if config.epochs == 0:
        return model, {"epochs": 0}
    if train is None or len(train) == 0:
        raise DataError("fine-tuning needs training data: pass --train (or --data)")
    train = train.take(config.max_examples) if config.max_examples else train
    classify = train.labels is not None and model.task != Task.EMBEDDING
    if not classify and teacher is None:
        raise DataError("fine-tuning without labels needs the original model as a teacher")
    student = copy.deepcopy(module)
    teacher_module = teacher.require_module("teaching") if teacher is not None else None
    losses = _train(model, student, teacher_module, train, config, classify)
    student.eval()
    report = {**config.to_dict(), "loss": "cross_entropy" if classify else "mse_to_original",
              "first_epoch_loss": losses[0], "last_epoch_loss": losses[-1]}
    return replace(model, module=student), report


def _train(model: Model, student: Any, teacher: Any, train: Dataset, config: FinetuneConfig,
           classify: bool) -> list[float]:
    import numpy as np
    import torch

    from slimkit.progress import progress

    opt = torch.optim.Adam(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    rng = np.random.default_rng(config.seed)
    losses = []
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        for _ in progress(range(config.epochs), "fine-tuning", config.epochs):
            order = rng.permutation(len(train))
            shuffled = Dataset({k: v[order] for k, v in train.inputs.items()},
                               None if train.labels is None else train.labels[order])
            total, count = 0.0, 0
            for inputs, labels in shuffled.batches(config.batch_size):
                student.train()
                args = model.torch_args(inputs)
                out = _first(student(*args))
                if classify:
                    loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(labels))
                else:
                    with torch.no_grad():
                        target = _first(teacher(*args))
                    loss = torch.nn.functional.mse_loss(out, target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(out)
                count += len(out)
            losses.append(round(total / max(count, 1), 6))
    return losses


def _first(out: Any) -> Any:
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict):
        return next(iter(out.values()))
    return getattr(out, "last_hidden_state", out)
