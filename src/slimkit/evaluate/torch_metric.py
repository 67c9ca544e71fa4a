"""A torch model's own metric on data, without exporting it: top-1 accuracy with labels, or
agreement with a reference model without them. Fast enough to run inside loops (sensitivity
scans, the search's proxies, fine-tuning reports)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.model import Model, Task, eval_mode, first_tensor


def metric(model: Model, data: Dataset, reference: Model | None = None,
           batch_size: int = 256) -> float:
    """Top-1 accuracy with labels; without them, agreement with ``reference``'s top-1 for a
    classifier or the mean cosine similarity of the outputs otherwise.

    Example:
        >>> import numpy as np
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
