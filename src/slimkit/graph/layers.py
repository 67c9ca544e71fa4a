"""The layers whose weights follow the channels (Conv, Linear, BatchNorm): how each moves
channels in the dependency graph, and how it is rebuilt smaller (``SURGERY``, by type name).

Rebuilding makes a new module of the same type with sliced copies of the kept weights; the
old module is never changed, so a module shared with another model stays intact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from slimkit.graph.channels import ChannelGraph, Env, LayerKind, LayerNode, shape_of, unknown
from slimkit.graph.rules import MODULE_RULES, first_input
from slimkit.registry import Registry

Keep = Sequence[int] | None  # kept indices of an axis, in order; None: the axis is unchanged

CONVS = ("Conv1d", "Conv2d", "Conv3d")
NORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


@dataclass(frozen=True)
class Surgery:
    """How to read a layer type's channel axes ``(out, in or None)`` and rebuild it."""

    axes: Callable[[Any], tuple[int, int | None]]
    rebuild: Callable[[Any, Keep, Keep], nn.Module]


SURGERY: Registry[Surgery] = Registry("layer surgery")


# ---- graph rules ------------------------------------------------------------------------

def conv_rule(node: fx.Node, conv: Any, graph: ChannelGraph, env: Env) -> list[int] | None:
    """groups=1: new output channels; depthwise (groups = in_channels): each output channel
    follows its input channel; other grouped convolutions: the same positions in every group."""
    variables = first_input(node, env)
    if variables is None or len(variables) != conv.in_channels:
        return unknown(node, graph, env, type(conv).__name__, "input channels not traced")
    name = str(node.target)
    if conv.groups == 1:
        out = graph.new_vars(conv.out_channels, name)
        graph.layers[name] = LayerNode(name, type(conv).__name__, LayerKind.CONV, out, variables)
        return out
    if conv.groups == conv.in_channels:
        per_input = conv.out_channels // conv.in_channels
        out = [v for v in variables for _ in range(per_input)]
        graph.layers[name] = LayerNode(name, type(conv).__name__, LayerKind.DEPTHWISE, out,
                                       variables)
        return out
    # grouped: channel j of every group is coupled (inputs and outputs alike), so every
    # group keeps the same positions and the convolution stays valid with the same groups
    out = graph.new_vars(conv.out_channels, name)
    for per_group, axis in ((conv.in_channels // conv.groups, variables),
                            (conv.out_channels // conv.groups, out)):
        for g in range(1, conv.groups):
            graph.unify(axis[:per_group], axis[g * per_group:(g + 1) * per_group])
    graph.layers[name] = LayerNode(name, type(conv).__name__, LayerKind.CONV, out, variables)
    return out


def linear_rule(node: fx.Node, linear: Any, graph: ChannelGraph, env: Env) -> list[int] | None:
    variables, shape = first_input(node, env), shape_of(node.args[0] if node.args else None)
    if variables is None or shape is None or len(shape) != 2:
        return unknown(node, graph, env, "Linear",
                       "only Linear layers on (batch, features) inputs are pruned")
    name = str(node.target)
    out = graph.new_vars(linear.out_features, name)
    graph.layers[name] = LayerNode(name, "Linear", LayerKind.LINEAR, out, variables)
    return out


def norm_rule(node: fx.Node, norm: Any, graph: ChannelGraph, env: Env) -> list[int] | None:
    variables = first_input(node, env)
    if variables is None or len(variables) != norm.num_features:
        return unknown(node, graph, env, type(norm).__name__, "input channels not traced")
    name = str(node.target)
    graph.layers[name] = LayerNode(name, type(norm).__name__, LayerKind.NORM, variables)
    return variables


for _conv in CONVS:
    MODULE_RULES.register(_conv)(conv_rule)
for _norm in NORMS:
    MODULE_RULES.register(_norm)(norm_rule)
MODULE_RULES.register("Linear")(linear_rule)


# ---- surgery ----------------------------------------------------------------------------

def _take(tensor: torch.Tensor, dim: int, keep: Keep) -> torch.Tensor:
    if keep is None:
        return tensor.detach()
    index = torch.as_tensor(list(keep), dtype=torch.long, device=tensor.device)
    return tensor.detach().index_select(dim, index)


def _copy_into(new: nn.Module, old: nn.Module, tensors: dict[str, torch.Tensor | None]) -> None:
    with torch.no_grad():
        for key, value in tensors.items():
            if value is None:
                continue
            target = getattr(new, key)
            target.copy_(value)
            source = getattr(old, key)
            if isinstance(target, nn.Parameter):
                target.requires_grad_(source.requires_grad)
    new.train(old.training)


def rebuild_conv(old: Any, out_keep: Keep, in_keep: Keep) -> nn.Module:
    depthwise = old.groups > 1 and old.groups == old.in_channels
    cin = len(in_keep) if in_keep is not None else old.in_channels
    cout = len(out_keep) if out_keep is not None else old.out_channels
    new = type(old)(cin, cout, old.kernel_size, old.stride, old.padding, old.dilation,
                    groups=cin if depthwise else old.groups, bias=old.bias is not None,
                    padding_mode=old.padding_mode, device=old.weight.device,
                    dtype=old.weight.dtype)
    weight = _take(old.weight, 0, out_keep)
    if not depthwise:  # a grouped weight's columns: the kept positions of the first group
        per_group = old.in_channels // old.groups
        weight = _take(weight, 1, None if in_keep is None
                       else [i for i in in_keep if i < per_group])
    bias = _take(old.bias, 0, out_keep) if old.bias is not None else None
    _copy_into(new, old, {"weight": weight, "bias": bias})
    return new


def rebuild_linear(old: Any, out_keep: Keep, in_keep: Keep) -> nn.Module:
    new = nn.Linear(len(in_keep) if in_keep is not None else old.in_features,
                    len(out_keep) if out_keep is not None else old.out_features,
                    bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
    bias = _take(old.bias, 0, out_keep) if old.bias is not None else None
    _copy_into(new, old, {"weight": _take(_take(old.weight, 0, out_keep), 1, in_keep),
                          "bias": bias})
    return new


def rebuild_norm(old: Any, out_keep: Keep, _in_keep: Keep) -> nn.Module:
    count = len(out_keep) if out_keep is not None else old.num_features
    device = old.running_mean.device if old.running_mean is not None else None
    new = type(old)(count, old.eps, old.momentum, old.affine, old.track_running_stats,
                    device=device)
    tensors: dict[str, torch.Tensor | None] = {}
    for key in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(old, key)
        tensors[key] = _take(value, 0, out_keep) if value is not None else None
    tensors["num_batches_tracked"] = old.num_batches_tracked
    _copy_into(new, old, tensors)
    return new


def _conv_axes(m: Any) -> tuple[int, int | None]:
    return m.out_channels, m.in_channels


for _conv in CONVS:
    SURGERY.register(_conv)(Surgery(_conv_axes, rebuild_conv))
for _norm in NORMS:
    SURGERY.register(_norm)(Surgery(lambda m: (m.num_features, None), rebuild_norm))
SURGERY.register("Linear")(Surgery(lambda m: (m.out_features, m.in_features), rebuild_linear))


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the qualified ``name`` inside ``root``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
