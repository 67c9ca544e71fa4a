"""Adaptive batch normalisation: re-estimate every BatchNorm's running mean and variance on a
few training batches (forward passes only, no weight changes).

Structured pruning removes channels whose outputs the next layers' BatchNorm statistics were
measured with, so a freshly pruned network evaluated with its stale statistics often predicts
one class, whatever its structure. Re-estimating the statistics (Li et al., EagleEye, ECCV
2020) costs a few forward passes and makes candidates comparable before any fine-tuning: on
resnet18-cifar trained on digits, uniform pruning at 0.25/0.5/0.75 reads 12% accuracy for all
three before, and 96/80/27% after 4 batches of 64. torch has no routine for it (``torch.optim.
swa_utils.update_bn`` takes a DataLoader of bare tensors and one positional input), hence
this one."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from slimkit.config import config_to_dict
from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.model import Model


@dataclass(frozen=True)
class BatchNormConfig:
    """The ``batchnorm`` recipe stage: statistics re-estimated on ``batches`` random batches
    of ``batch_size`` training examples (seeded)."""

    batches: int = 4
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batches < 1 or self.batch_size < 2:
            raise InputError(f"batch-norm recalibration needs batches >= 1 and batch_size >= 2 "
                             f"(got {self.batches}, {self.batch_size})")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def recalibrate_batchnorm(model: Model, data: Dataset, batches: int = 4, batch_size: int = 64,
                          seed: int = 0) -> Model:
    """A copy of ``model`` whose BatchNorm statistics are the plain average over ``batches``
    random batches of ``data``; ``model`` itself is not changed (returned as is when it has
    no BatchNorm, ``batches`` is 0 or ``data`` has fewer than 2 examples).

    Example:
        >>> import torch
        >>> from slimkit.model import Model, TensorSpec
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).eval()
        >>> m = Model("net", "doc", (TensorSpec("input", ("batch", 4)),), module=net)
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
        >>> out = recalibrate_batchnorm(m, Dataset({"input": x}), batches=1)
        >>> y = net[0](torch.from_numpy(x)).detach()
        >>> torch.allclose(out.module[1].running_mean, y.mean(0), atol=1e-5)
        True
    """
    import torch

    original = model.require_module("batch-norm recalibration")
    originals = _norms(original)
    if not originals or batches < 1 or len(data) < 2:  # one example gives no variance
        return model
    module = copy.deepcopy(original)
    updated = replace(model, module=module)
    copies = _norms(module)
    for norm in copies:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    order = np.random.default_rng(seed).permutation(len(data))
    # a batch of one example gives no variance: a last batch of one is left out
    size = max(2, min(batch_size, len(data)))
    module.train()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)  # dropout, if any, stays reproducible
        for start in range(0, min(batches * size, len(order)), size):
            idx = order[start:start + size]
            if len(idx) < 2:
                break
            module(*updated.torch_args({k: v[idx] for k, v in data.inputs.items()}))
    for norm, old in zip(copies, originals, strict=True):
        norm.momentum = old.momentum
    module.eval()
    return updated


def has_batchnorm(model: Model) -> bool:
    """Whether the torch model has BatchNorm layers."""
    return bool(_norms(model.require_module("batch-norm check")))


def _norms(module: Any) -> list[Any]:
    import torch

    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
