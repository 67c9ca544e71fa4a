"""Fine-tuning a copy of a model to recover what compression cost: the public face of the one
training loop for techniques (pruning, recipes, the search's finalists).

``finetune`` trains a copy on the user's data: cross-entropy with the labels by default, or the
user's ``loss_fn(outputs, batch)``. Distillation plugs in through two hooks: ``teacher`` (a Model
run on every batch under ``no_grad``; its first output lands in ``TrainBatch.teacher_outputs``)
and a ``loss_fn`` that reads it (:func:`mse_to_teacher`, or ``slimkit.distill``'s losses).
Unstructured masks survive training (``torch.nn.utils.prune`` re-applies them at every forward).
With ``workers > 1`` the same run goes data-parallel (``slimkit.train.ddp``).
"""

from __future__ import annotations

from dataclasses import replace

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.graph.masks import copy_masked
from slimkit.model import Model
from slimkit.train.hooks import (
    FinetuneConfig,
    TrainHooks,
    TrainResult,
    check_hooks,
    hooks_loss,
    teacher_outputs,
)
from slimkit.train.loop import Trainer


def finetune(model: Model, data: Dataset, config: FinetuneConfig | None = None,
             hooks: TrainHooks | None = None) -> TrainResult:
    """Train a copy of ``model`` on ``data``; ``model`` itself is not modified.

    Args:
        model: a torch model (masks from unstructured pruning are kept and stay applied).
        data: training examples; labels are needed by the built-in cross-entropy.
        config: epochs, optimizer, learning rate, batch size, seed, workers.
        hooks: the loss (``loss_fn(student_outputs, batch)``), a teacher whose outputs reach
            the loss (distillation) and a regulariser.

    Example:
        >>> import numpy as np
        >>> from slimkit.testing import tiny_model
        >>> m = tiny_model("mlp")
        >>> data = Dataset({"input": np.ones((8, 8), np.float32)}, np.zeros(8, np.int64))
        >>> r = finetune(m, data, FinetuneConfig(epochs=2, lr=0.1))
        >>> r.losses[1] < r.losses[0]
        True
    """
    config, hooks = config or FinetuneConfig(), hooks or TrainHooks()
    if len(data) == 0:
        raise InputError("fine-tuning needs at least one example")
    check_hooks(hooks)
    if config.workers > 1 and config.epochs > 0:
        from slimkit.train.ddp import finetune_ddp

        return finetune_ddp(model, data, config, hooks)
    trained = replace(model, module=copy_masked(model.require_module("fine-tuning")))
    losses = Trainer(trained, data, config.train_config(), hooks_loss(hooks),
                     batch_hook=teacher_outputs(hooks.teacher),
                     description="fine-tuning").run()
    return TrainResult(trained, losses)


