"""A test kit for slimkit and its users: tiny models and comparisons with explicit tolerances.

Tolerances are always written at the call site: no helper here has a lax default.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from slimkit.evaluate.metrics import sqnr_db
from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec
from slimkit.testing.cnns import CNN_NAMES, cnn_model  # noqa: F401  (re-export)
from slimkit.testing.transformers import (  # noqa: F401  (re-export)
    tiny_gqa,
    tiny_transformer,
    tiny_vit,
)


class TinyMLP(nn.Module):
    def __init__(self, features: int = 8, hidden: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def tiny_mlp() -> TinyMLP:
    """A factory for specs like ``slimkit.testing:tiny_mlp`` (seeded, so weights repeat)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TinyMLP().eval()


def tiny_cnn() -> TinyCNN:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TinyCNN().eval()


def tiny_model(kind: str = "mlp") -> Model:
    """A Model handle on a tiny MLP (input 8 features) or CNN (input 3x8x8)."""
    if kind == "mlp":
        return Model(name="tiny-mlp", source="slimkit.testing:tiny_mlp", module=tiny_mlp(),
                     inputs=(TensorSpec("input", (DYNAMIC_BATCH, 8)),),
                     task=Task.CLASSIFICATION)
    return Model(name="tiny-cnn", source="slimkit.testing:tiny_cnn", module=tiny_cnn(),
                 inputs=(TensorSpec("input", (DYNAMIC_BATCH, 3, 8, 8)),),
                 task=Task.CLASSIFICATION)


def assert_close_to_reference(actual: np.ndarray, expected: np.ndarray, *,
                              atol: float | None = None, rtol: float | None = None,
                              min_sqnr_db: float | None = None) -> None:
    """Exact transforms: give ``atol`` and ``rtol``; lossy ones: give ``min_sqnr_db``."""
    if atol is None and rtol is None and min_sqnr_db is None:
        raise ValueError("give atol/rtol or min_sqnr_db: there is no default tolerance")
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != reference shape {expected.shape}")
    if atol is not None or rtol is not None:
        np.testing.assert_allclose(actual, expected, atol=atol or 0.0, rtol=rtol or 0.0)
    if min_sqnr_db is not None:
        got = sqnr_db(expected, actual)
        if got < min_sqnr_db:
            raise AssertionError(f"SQNR {got:.2f} dB < required {min_sqnr_db:.2f} dB")


def with_activation_outliers(model: Model, channel: int = 0, factor: float = 1000.0) -> Model:
    """The same function with one huge hidden channel: the first Linear's output channel
    ``channel`` is scaled by ``factor`` and the next Linear's input column by 1/factor (exact
    through ReLU). Per-tensor int8 activations then lose the other channels: a model on which
    plain int8 fails an accuracy budget, for testing accuracy-aware quantization."""
    import copy

    module = copy.deepcopy(model.require_module("outlier injection"))
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    first, second = linears[0], linears[1]
    with torch.no_grad():
        first.weight[channel] *= factor
        first.bias[channel] *= factor
        second.weight[:, channel] /= factor
    return Model(name=f"{model.name}-outliers", source=model.source, module=module,
                 inputs=model.inputs, output_names=model.output_names, task=model.task)
