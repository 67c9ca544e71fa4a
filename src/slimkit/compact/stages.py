"""The stages of the Deep Compression pipeline that are not a technique of their own:
gradual magnitude pruning during fine-tuning, float16 storage precision, and measuring."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.model import Model
from slimkit.train.loop import Schedule, TrainConfig, Trainer


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float,
                    scope: str) -> dict[str, torch.Tensor]:
    """Keep-masks removing the ``sparsity`` share of smallest |w|, per layer or over all.

    Example:
        >>> w = {"a": torch.tensor([1.0, -3.0, 0.5, 2.0])}
        >>> magnitude_masks(w, 0.5, "layer")["a"].tolist()
        [False, True, False, True]
    """
    if scope == "global":
        flat = torch.cat([w.abs().reshape(-1) for w in weights.values()])
        threshold = _kth(flat, round(sparsity * flat.numel()))
        return {n: w.abs() > threshold for n, w in weights.items()}
    return {n: w.abs() > _kth(w.abs().reshape(-1), round(sparsity * w.numel()))
            for n, w in weights.items()}


def _kth(values: torch.Tensor, k: int) -> float:
    """The k-th smallest value (``-inf`` for k = 0: nothing removed)."""
    if k <= 0:
        return float("-inf")
    return float(torch.kthvalue(values, min(k, values.numel())).values)


def gradual_prune(model: Model, data: Dataset, *, sparsity: float, epochs: int, scope: str,
                  exclude: tuple[str, ...], lr: float, batch_size: int,
                  seed: int) -> tuple[Model, list[float]]:
    """Magnitude pruning to ``sparsity`` on Zhu & Gupta's cubic schedule while fine-tuning
    (masks updated every step over the first two thirds, then fixed); the masks are baked
    into the returned copy. With ``epochs = 0`` it prunes once, without training."""
    from torch.nn.utils import prune as torch_prune

    from slimkit.graph.masks import bake_masks, copy_masked, masked_layers
    from slimkit.train.schedules import cubic_sparsity

    module = bake_masks(copy_masked(model.require_module("pruning")))
    layers: dict[str, Any] = {n: cast(Any, sub) for n, sub in masked_layers(module, exclude)}
    for sub in layers.values():
        torch_prune.identity(sub, "weight")  # a mask of ones, updated in place below
    config = TrainConfig(epochs, lr, batch_size=batch_size, seed=seed,
                         schedule=Schedule.CONSTANT, threads=1)
    end = max(1, epochs * config.steps_per_epoch(len(data)) * 2 // 3)

    def update(step: int) -> None:
        target = cubic_sparsity(step, sparsity, end) if sparsity else 0.0
        weights = {n: (s.weight_orig * s.weight_mask).detach() for n, s in layers.items()}
        for name, mask in magnitude_masks(weights, target, scope).items():
            layers[name].weight_mask.copy_(mask & layers[name].weight_mask.bool())

    pruned = replace(model, module=module, name=f"{model.name}-sparse")
    losses = Trainer(pruned, data, config, before_step=update,
                     description="pruning gradually").run() if epochs else []
    update(end)  # exactly the final sparsity
    bake_masks(module)
    return pruned, losses


def to_half_precision(model: Model) -> Model:
    """A copy whose float tensors hold float16-representable values (dtype kept float32):
    codebooks, biases and norms then take half the space in a ``.slim`` file. Zeros stay zero
    and a codebook never gains values."""
    import copy

    module = copy.deepcopy(model.require_module("rounding"))
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.dtype == torch.float32:
                tensor.copy_(tensor.half().float())
    return replace(model, module=module)


def accuracy_of(model: Model, data: Dataset) -> float:
    """Top-1 accuracy of the torch model on ``data``'s labels."""
    from slimkit.evaluate.metrics import accuracy, predict

    if data.labels is None:
        raise ValueError("accuracy needs labels")
    return round(accuracy(predict(model, data), data.labels), 6)


def fp32_safetensors_bytes(module: nn.Module) -> int:
    """The real size on disk of the module's state written as a float32 safetensors file."""
    from slimkit.graph.masks import weights_bytes

    with tempfile.TemporaryDirectory(prefix="slimkit-size-") as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(weights_bytes(module))
        return path.stat().st_size


def slim_bytes(model: Model, codecs: tuple[str, ...]) -> dict[str, Any]:
    """The real size on disk of ``model`` written as ``.slim`` with ``codecs`` only."""
    from slimkit.compact.container import write_slim

    with tempfile.TemporaryDirectory(prefix="slimkit-size-") as tmp:
        info = write_slim(model, Path(tmp) / "model.slim", codecs=codecs)
        return {"file_bytes": info.file_bytes, "manifest_bytes": info.manifest_bytes,
                "payload_bytes": info.payload_bytes}


def identical_outputs(a: Model, b: Model, data: Dataset) -> float:
    """The largest absolute difference of two models' outputs on ``data`` (0.0 = identical)."""
    from slimkit.evaluate.metrics import predict

    return float(np.max(np.abs(predict(a, data) - predict(b, data))))
