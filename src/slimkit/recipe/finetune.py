"""The fine-tuning stage: ``slimkit.train.finetune`` (seeded, cosine schedule) with
cross-entropy on labels for classifiers and, without labels, mean-squared error to the original
model's outputs (self-distillation through its teacher hook)."""

from __future__ import annotations

from typing import Any

from slimkit.data import Dataset
from slimkit.errors import DataError
from slimkit.model import Model, Task
from slimkit.train.finetune import finetune as train
from slimkit.train.hooks import FinetuneConfig, TrainHooks, mse_to_teacher

__all__ = ["FinetuneConfig", "finetune", "mse_to_teacher"]


def finetune(model: Model, config: FinetuneConfig, data: Dataset | None,
             teacher: Model | None = None) -> tuple[Model, dict[str, Any]]:
    """Fine-tune a copy of ``model``; returns it and a report (loss, first/last epoch loss).

    Example:
        >>> from slimkit.testing import tiny_model
        >>> from slimkit.data import synthetic
        >>> m = tiny_model("mlp")
        >>> _, rep = finetune(m, FinetuneConfig(epochs=1), synthetic(m.inputs, 8), teacher=m)
        >>> rep["loss"]
        'mse_to_original'
    """
    model.require_module("fine-tuning")
    if config.epochs == 0:
        return model, {"epochs": 0}
    if data is None or len(data) == 0:
        raise DataError("fine-tuning needs training data: pass --train (or --data)")
    classify = data.labels is not None and model.task != Task.EMBEDDING
    if not classify and teacher is None:
        raise DataError("fine-tuning without labels needs the original model as a teacher")
    hooks = TrainHooks() if classify else TrainHooks(loss_fn=mse_to_teacher, teacher=teacher)
    result = train(model, data, config, hooks)
    report = {**config.to_dict(), "loss": "cross_entropy" if classify else "mse_to_original",
              "first_epoch_loss": result.losses[0] if result.losses else None,
              "last_epoch_loss": result.losses[-1] if result.losses else None}
    return result.model, report
