"""The distillation config: one frozen dataclass, validated on creation; CLI flags map onto it
field by field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from slimkit.config import config_from_dict, config_to_dict
from slimkit.errors import InputError


@dataclass(frozen=True)
class DistillConfig:
    """How to distil a student from a teacher.

    Args:
        loss: a strategy of ``slimkit.distill.LOSSES``: ``kd`` (soft-target KL at
            ``temperature`` weighted by ``alpha`` plus hard-label cross-entropy weighted by
            ``1 - alpha``; without labels only the KL term), ``embedding-mse`` or
            ``embedding-cosine`` (pooled outputs of encoders; needs no labels).
        temperature: softens both distributions of ``kd``; the KL term is scaled by T^2.
        alpha: weight of the soft (teacher) term in ``kd``; 0 is plain fine-tuning on labels.
        features: ``(student_layer, teacher_layer)`` pairs (qualified module names) whose
            outputs are matched by MSE (hint loss); a small learned adapter (``nn.Linear`` on
            the last axis, a 1x1 ``nn.Conv2d`` on channels) bridges differing widths.
        feature_weight: weight of the summed hint losses.
        output_adapter: for embedding losses, learn an ``nn.Linear`` from the student's
            output width to the teacher's when they differ (otherwise that is an error).
        epochs, max_steps: training length; ``max_steps`` (when set) stops earlier.
        lr, optimizer, weight_decay: the optimizer (``adam``, ``adamw``, ``sgd``).
        batch_size: examples per step.
        seed: seeds the order of examples, adapters and dropout; written into the report.
        eval_every: validate every this many steps (0: once per epoch); needs validation data.
        patience: stop after this many validations without improvement (0: never stop early);
            the best student seen is the one returned.
        checkpoint_every: write a checkpoint every this many steps (0: only at the end) when a
            checkpoint folder is given.

    Example:
        >>> DistillConfig(temperature=2.0, alpha=0.9).loss
        'kd'
    """

    loss: str = "kd"
    temperature: float = 4.0
    alpha: float = 0.9
    features: tuple[tuple[str, str], ...] = ()
    feature_weight: float = 1.0
    output_adapter: bool = False
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batch_size: int = 32
    seed: int = 0
    eval_every: int = 0
    patience: int = 0
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        from slimkit.distill.losses import LOSSES
        from slimkit.train.loop import OPTIMIZERS

        LOSSES.get(self.loss)  # an unknown name fails here, listing the known ones
        OPTIMIZERS.get(self.optimizer)
        object.__setattr__(self, "features",
                           tuple((str(s), str(t)) for s, t in self.features))
        _positive(self.temperature, "temperature")
        _positive(self.lr, "lr")
        _in_unit(self.alpha, "alpha")
        if not math.isfinite(self.feature_weight) or self.feature_weight < 0:
            raise InputError(f"feature_weight must be >= 0, got {self.feature_weight}")
        if self.weight_decay < 0:
            raise InputError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"max_steps must be >= 1 (or None), got {self.max_steps}")
        for name in ("eval_every", "patience", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        """The config from ``to_dict``'s output (an allow-list of fields; unknown keys fail)."""
        return config_from_dict(cls, data, "distillation")


def _positive(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a positive number, got {value!r}")


def _in_unit(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0.0 <= value <= 1.0:
        raise InputError(f"{name} must be in [0, 1], got {value!r}")
