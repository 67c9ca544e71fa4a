"""Regularisation-based importance: a short sparse-training pass on the user's data, after
which importance is read off the trained weights.

* network slimming (Liu et al., 2017): an L1 penalty on the scales (gamma) of BatchNorm and
  other norm layers drives unneeded channels' scales towards zero; importance = ``|gamma|``.
* group lasso (structured sparsity learning, Wen et al., 2016): the sum of the L2 norms of
  every output channel's weights (each row of a Linear, each filter of a convolution) drives
  whole channels to zero; importance = the squared norms after training.

``slimkit.prune.prune`` prunes the sparse-trained model (that is the method: channels whose
scale the penalty drove to zero are removed at almost no cost); ``plan_pruning`` on its own
trains a copy only to score the channels of the model it was given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.model import Model
from slimkit.registry import Registry
from slimkit.train.finetune import finetune
from slimkit.train.hooks import FinetuneConfig, Penalty, TrainHooks

log = logging.getLogger(__name__)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
WEIGHT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
META_KEY = "sparse_training"  # model.meta entry of a sparse-trained model: its settings


@dataclass(frozen=True)
class SparseTraining:
    """Settings of the sparse-training pass (the defaults suit a short pass on a small set).

    Example:
        >>> SparseTraining(strength=1e-3).epochs
        2
    """

    strength: float = 1e-4
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.strength > 0 or self.epochs < 1 or not self.lr > 0:
            raise InputError("sparse training needs strength > 0, epochs >= 1 and lr > 0 (got "
                             f"{self.strength}, {self.epochs}, {self.lr})")


def slimming_penalty(strength: float) -> Penalty:
    """``strength * sum |gamma|`` over the scales of every norm layer."""
    def penalty(module: nn.Module) -> torch.Tensor:
        terms = [m.weight.abs().sum() for m in module.modules()
                 if isinstance(m, NORM_TYPES) and isinstance(m.weight, torch.Tensor)]
        return strength * torch.stack(terms).sum() if terms else torch.zeros(())
    return penalty


def group_lasso_penalty(strength: float) -> Penalty:
    """``strength * sum ||W_c||_2`` over the output channels ``c`` of every Conv and Linear
    layer (a norm layer's scale counts as a group of one)."""
    def penalty(module: nn.Module) -> torch.Tensor:
        terms = []
        for m in module.modules():
            weight = getattr(m, "weight", None)
            if not isinstance(weight, torch.Tensor):
                continue
            if isinstance(m, WEIGHT_TYPES):
                terms.append(weight.flatten(1).norm(dim=1).sum())
            elif isinstance(m, NORM_TYPES):
                terms.append(weight.abs().sum())
        return strength * torch.stack(terms).sum() if terms else torch.zeros(())
    return penalty


PENALTIES: Registry[Callable[[float], Penalty]] = Registry("regularised criterion")
PENALTIES.register("slimming")(slimming_penalty)
PENALTIES.register("group_lasso")(group_lasso_penalty)


def sparse_train(model: Model, criterion: str, data: Dataset | None,
                 settings: SparseTraining | None = None) -> Model:
    """A copy of ``model`` trained with the penalty of ``criterion`` (``slimming`` or
    ``group_lasso``) added to cross-entropy on ``data``'s labels; marked as sparse-trained
    in its ``meta`` so the criterion reads its weights as they are.

    Example:
        >>> import numpy as np
        >>> from slimkit.testing import tiny_model
        >>> data = Dataset({"input": np.ones((8, 3, 8, 8), np.float32)}, np.zeros(8, np.int64))
        >>> trained = sparse_train(tiny_model("cnn"), "slimming", data, SparseTraining(epochs=1))
        >>> trained.meta["sparse_training"]["criterion"]
        'slimming'
    """
    settings = settings or SparseTraining()
    make_penalty = PENALTIES.get(criterion)
    if data is None or len(data) == 0 or data.labels is None:
        raise InputError(f"importance '{criterion}' trains the model with a sparsity penalty "
                         "first: it needs labelled data (--data builtin:digits, or a .npz "
                         "with 'labels')")
    config = FinetuneConfig(epochs=settings.epochs, lr=settings.lr,
                            batch_size=settings.batch_size, seed=settings.seed)
    result = finetune(model, data, config, TrainHooks(penalty=make_penalty(settings.strength)))
    log.info("sparse training (%s, strength %g): losses %s", criterion, settings.strength,
             [round(v, 4) for v in result.losses])
    info = {"criterion": criterion, "strength": settings.strength, "epochs": settings.epochs,
            "lr": settings.lr, "losses": [round(v, 5) for v in result.losses]}
    return replace(result.model, meta={**model.meta, META_KEY: info})


def is_sparse_trained(model: Model, criterion: str) -> bool:
    info = model.meta.get(META_KEY)
    return isinstance(info, dict) and info.get("criterion") == criterion


def norm_scales(module: nn.Module, parameters: tuple[str, ...],
                tie_break: float = 1e-6) -> dict[str, torch.Tensor]:
    """Slimming saliency: ``|gamma|`` for the scales of norm layers; Conv and Linear weights
    get ``tie_break * |w|`` (ranks the channels of groups without a norm layer by magnitude
    without outweighing any scale)."""
    norms = {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, NORM_TYPES)}
    params = dict(module.named_parameters())
    return {name: params[name].detach().abs() * (1.0 if name in norms else tie_break)
            for name in parameters}
