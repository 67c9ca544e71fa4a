"""The search space: a pruning ratio per channel group and int8-or-float per layer, as Optuna
suggestions; every point maps onto a replayable recipe (prune -> finetune -> quantize/export)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from slimkit.model import Model

INT8 = "int8"


@dataclass(frozen=True)
class GroupChoice:
    """One prunable channel group: a layer only it contains (the rule that names it in
    ``PruneConfig.layer_ratios``), its channel count and its allowed ratios."""

    key: str
    channels: int
    ratios: tuple[float, ...]


@dataclass(frozen=True)
class SearchSpace:
    """Example:
    >>> s = SearchSpace((GroupChoice("fc1", 16, (0.0, 0.5)),), ("fc2",), ("fc1", "fc2"))
    >>> s.prune_rules({"ratio:fc1": 0.5})
    (('name:fc1', 0.5),)
    """

    groups: tuple[GroupChoice, ...]
    quant_choices: tuple[str, ...]  # layers with their own int8/float choice
    quant_layers: tuple[str, ...]  # every quantizable layer (torch module paths)
    quantize: bool = True
    int8_mode: str = "static"  # static for convolutional models, dynamic for the rest

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` (an Optuna trial) for one point; the same names every time."""
        params: dict[str, Any] = {}
        for group in self.groups:
            params[f"ratio:{group.key}"] = trial.suggest_categorical(f"ratio:{group.key}",
                                                                     list(group.ratios))
        if self.quantize:
            params[INT8] = trial.suggest_categorical(INT8, [False, True])
            for layer in self.quant_choices:
                params[f"float:{layer}"] = trial.suggest_categorical(f"float:{layer}",
                                                                     [False, True])
        return params

    def prune_rules(self, params: dict[str, Any]) -> tuple[tuple[str, float], ...]:
        return tuple((f"name:{g.key}", float(params[f"ratio:{g.key}"])) for g in self.groups
                     if params.get(f"ratio:{g.key}", 0.0) > 0)

    def float_layers(self, params: dict[str, Any]) -> tuple[str, ...]:
        """Layers kept float in an int8 point (none when the point is not int8)."""
        if not params.get(INT8):
            return ()
        return tuple(layer for layer in self.quant_choices if params.get(f"float:{layer}"))

    def digest(self) -> str:
        """A hash of the space: a study stored for another space is refused."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        """The space from ``to_dict``'s output (as stored in a search report)."""
        groups = tuple(GroupChoice(g["key"], int(g["channels"]), tuple(g["ratios"]))
                       for g in data["groups"])
        return cls(groups, tuple(data["quant_choices"]), tuple(data["quant_layers"]),
                   bool(data["quantize"]), str(data.get("int8_mode", "static")))


def model_digest(model: Model) -> str:
    """A hash of a torch model's architecture and weights (or an ONNX file's bytes).

    Example:
        >>> from slimkit.testing import tiny_model
        >>> model_digest(tiny_model("mlp")) == model_digest(tiny_model("mlp"))
        True
    """
    h = hashlib.sha256()
    if model.module is None:
        h.update(model.onnx_path.read_bytes() if model.onnx_path else b"")
        return h.hexdigest()[:16]
    h.update(type(model.module).__qualname__.encode())
    for name, tensor in model.module.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def channel_groups(model: Model) -> list[tuple[str, int]]:
    """(key layer, channels) of every prunable group, where the key layer belongs to no other
    group (so ``name:KEY`` selects exactly that group)."""
    from slimkit.prune import PruneConfig, plan_pruning

    plan = plan_pruning(model, PruneConfig(ratio=0.0, round_to=1))
    counts: dict[str, int] = {}
    for group in plan.groups:
        for layer in group.layers:
            counts[layer] = counts.get(layer, 0) + 1
    out = []
    for group in plan.groups:
        if group.note and group.note.startswith("left whole"):
            continue
        unique = [layer for layer in group.layers if counts[layer] == 1]
        if unique:
            out.append((unique[0], group.channels))
    return out


def int8_mode(model: Model) -> str:
    """``static`` (calibrated activations, QLinearConv) when the model has convolutions,
    else ``dynamic`` (int8 weights, activations quantized at run time), as ONNX Runtime
    recommends for transformers and other GEMM models."""
    import torch

    module = model.require_module("search")
    convs = (torch.nn.Conv1d, torch.nn.Conv2d)
    return "static" if any(isinstance(m, convs) for m in module.modules()) else "dynamic"


def quantizable_modules(model: Model) -> list[str]:
    """Module paths of the Conv/Linear layers (what int8 quantizes)."""
    import torch

    module = model.require_module("search")
    return [name for name, m in module.named_modules()
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
