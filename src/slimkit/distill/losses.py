"""Distillation losses: pure functions of output tensors, and the registry of loss strategies.

A strategy takes ``(student_out, teacher_out, labels, config)`` and returns a scalar loss;
``labels`` may be None (unlabeled data), which each strategy handles or rejects clearly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from slimkit.errors import DataError
from slimkit.registry import Registry

if TYPE_CHECKING:
    from slimkit.distill.config import DistillConfig

LossStrategy = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", "DistillConfig"],
                        torch.Tensor]
LOSSES: Registry[LossStrategy] = Registry("distillation loss")


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softened distributions, times T^2 (Hinton et al., 2015:
    keeps the gradient scale independent of T).

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> float(soft_kl(x, x, 4.0))
        0.0
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            labels: torch.Tensor | None, temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * soft_kl + (1 - alpha) * cross_entropy(labels)``; without labels the soft
    term alone (alpha must then be > 0)."""
    if labels is None:
        if alpha == 0.0:
            raise DataError("alpha 0 trains on labels only, but the data has no labels; "
                            "give labelled data or alpha > 0")
        return soft_kl(student_logits, teacher_logits, temperature)
    hard = F.cross_entropy(student_logits, labels.long())
    if alpha == 0.0:
        return hard
    return alpha * soft_kl(student_logits, teacher_logits, temperature) + (1 - alpha) * hard


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error of paired embeddings."""
    return F.mse_loss(student, teacher)


def embedding_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 - cosine`` of paired embeddings, averaged (0 when they point the same way).

    Example:
        >>> round(float(embedding_cosine(torch.ones(2, 3), 2 * torch.ones(2, 3))), 6)
        0.0
    """
    return (1.0 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()


@LOSSES.register("kd")
def _kd(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None,
        config: DistillConfig) -> torch.Tensor:
    return kd_loss(student, teacher, labels, config.temperature, config.alpha)


@LOSSES.register("embedding-mse")
def _mse(student: torch.Tensor, teacher: torch.Tensor, _labels: torch.Tensor | None,
         _config: DistillConfig) -> torch.Tensor:
    return embedding_mse(student, teacher)


@LOSSES.register("embedding-cosine")
def _cosine(student: torch.Tensor, teacher: torch.Tensor, _labels: torch.Tensor | None,
            _config: DistillConfig) -> torch.Tensor:
    return embedding_cosine(student, teacher)


def hint_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """MSE between an (adapted) student feature map and the teacher's (FitNets hints)."""
    return F.mse_loss(student_feature, teacher_feature)
