"""Quantization-aware training in torch: batch-norm folding, fake-quantized weights (per-channel
symmetric int8, a parametrization) and activations (per-tensor u8 at each Conv/Linear input, a
forward pre-hook) with straight-through gradients, optionally learned activation scales
(LSQ, Esser et al. 2020), and a short fine-tuning loop.

The fine-tuned float weights and the learned activation ranges then go to ONNX Runtime's static
QDQ quantizer (weights: the same per-channel symmetric min-max scales as here; activations: the
learned ranges as ``TensorQuantOverrides``), so ORT fuses the result into integer kernels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.model import Model, Task

QAT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
EMA = 0.9


def fold_batchnorm(module: nn.Module) -> list[str]:
    """Fold every BatchNorm that directly follows a Conv (its only user) into the Conv, in place;
    the BatchNorm becomes Identity. Returns the folded Conv names. Exact in eval mode."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001 - untraceable models train without folding
        return []
    modules = dict(module.named_modules())
    folded = []
    for node in graph.nodes:
        bn = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or not node.args:
            continue
        prev = node.args[0]
        conv = modules.get(str(prev.target)) if getattr(prev, "op", "") == "call_module" else None
        if isinstance(conv, (nn.Conv1d, nn.Conv2d)) and len(prev.users) == 1:
            _fold(conv, bn)
            _set_submodule(module, str(node.target), nn.Identity())
            folded.append(str(prev.target))
    return folded


def _fold(conv: Any, bn: Any) -> None:  # nn.Module's typed attributes are Tensor | Module
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * scale + bn.bias
        conv.bias = nn.Parameter(new_bias)


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


class FakeQuantWeight(nn.Module):
    """Per-output-channel symmetric int8 fake quantization (straight-through gradient)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        flat = weight.detach().reshape(weight.shape[0], -1)
        scale = (flat.abs().amax(dim=1) / 127.0).clamp(min=1e-8)
        zero = torch.zeros(weight.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)


class FakeQuantActivation(nn.Module):
    """Per-tensor u8 fake quantization of a layer input, its range an EMA of observed min/max,
    or (``learn``) a learned scale and zero point (LSQ) once observed."""

    def __init__(self, learn: bool) -> None:
        super().__init__()
        self.learn = learn
        self.lo: float | None = None  # observed range (EMA of batch min/max, containing 0)
        self.hi = 0.0
        self.observing = True
        # 1-element (not 0-dim) tensors: the shape torch's learnable fake-quant op takes
        self.scale = nn.Parameter(torch.ones(1), requires_grad=learn)
        self.zero = nn.Parameter(torch.zeros(1), requires_grad=False)

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = min(float(x.detach().min()), 0.0), max(float(x.detach().max()), 0.0)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo = EMA * self.lo + (1 - EMA) * lo
            self.hi = EMA * self.hi + (1 - EMA) * hi

    def freeze_range(self) -> None:
        lo = self.lo or 0.0
        with torch.no_grad():
            self.scale.fill_(max((self.hi - lo) / 255.0, 1e-8))
            self.zero.fill_(round(-lo / float(self.scale)))
        self.observing = False

    def range(self) -> tuple[float, float]:
        scale, zero = float(self.scale.detach()), float(self.zero.detach())
        return (0.0 - zero) * scale, (255.0 - zero) * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.observe(x)
            return x
        if self.learn:
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, self.scale, self.zero, 0, 255, 1.0)
        return torch.fake_quantize_per_tensor_affine(
            x, float(self.scale), int(self.zero), 0, 255)


@dataclass
class QATResult:
    model: Model
    ranges: dict[str, tuple[float, float]]  # layer module path -> learned input range
    folded: list[str]
    losses: list[float]


def qat_finetune(model: Model, data: Dataset, epochs: int, lr: float, learn_scales: bool,
                 seed: int = 0) -> QATResult:
    """Fold BN, fake-quantize, fine-tune on ``data`` (cross-entropy with labels, otherwise
    distillation to the float model's outputs), and return the trained float copy with the
    learned activation ranges."""
    original = model.require_module("quantization-aware training")
    module = copy.deepcopy(original).eval()
    folded = fold_batchnorm(module)
    layers = {name: m for name, m in module.named_modules() if isinstance(m, QAT_LAYERS)}
    if not layers:
        raise InputError(f"'{model.name}' has no Conv or Linear layer to train quantized")
    acts = {name: FakeQuantActivation(learn_scales) for name in layers}
    hooks = [layer.register_forward_pre_hook(_pre_hook(acts[name]))
             for name, layer in layers.items()]
    for layer in layers.values():
        parametrize.register_parametrization(layer, "weight", FakeQuantWeight())
    try:
        _observe(module, model, data)
        for act in acts.values():
            act.freeze_range()
        losses = _train(replace(model, module=module), original, data, epochs, lr, seed, acts)
    finally:
        for hook in hooks:
            hook.remove()
        for layer in layers.values():
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    module.eval()
    ranges = {name: act.range() for name, act in acts.items()}
    return QATResult(replace(model, module=module), ranges, folded, losses)


def _pre_hook(act: FakeQuantActivation) -> Callable[..., Any]:
    def hook(_: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (act(args[0]), *args[1:])

    return hook


def _observe(module: nn.Module, model: Model, data: Dataset, batches: int = 8) -> None:
    with torch.no_grad():
        for i, (inputs, _) in enumerate(data.batches(32)):
            if i >= batches:
                break
            module(*model.torch_args(inputs))


def _train(model: Model, teacher: nn.Module, data: Dataset, epochs: int, lr: float, seed: int,
           acts: dict[str, FakeQuantActivation]) -> list[float]:
    """Fine-tune the fake-quantized module (and the learned scales) in the one training loop:
    cross-entropy with labels for a classifier, else mean-squared error to the float model."""
    from slimkit.train.loop import Schedule, TrainBatch, TrainConfig, Trainer, cross_entropy

    module = model.require_module("quantization-aware training")
    params = [p for p in module.parameters() if p.requires_grad]
    params += [a.scale for a in acts.values() if a.scale.requires_grad]
    use_labels = data.labels is not None and model.task == Task.CLASSIFICATION

    def to_teacher(student: nn.Module, batch: TrainBatch) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(*batch.args)
        return nn.functional.mse_loss(student(*batch.args), target)

    config = TrainConfig(epochs, lr, batch_size=32, seed=seed, schedule=Schedule.CONSTANT)
    return Trainer(model, data, config, cross_entropy if use_labels else to_teacher,
                   parameters=params, description="quantization-aware training").run()
