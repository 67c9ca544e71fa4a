"""How each traced op moves channels: the rules of the dependency graph, found by module type
(``MODULE_RULES``), function target or method name. An op with no rule is *unknown*: the
channels flowing through it are pinned and the op is reported (see ``graph.unknown``).

A rule takes ``(node, module or None, graph, env)`` and returns the channel variables of the
node's output (dim 1), or None for an output without channels.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from slimkit.graph.channels import ChannelGraph, Env, flatten_block, shape_of, unknown
from slimkit.registry import Registry

Rule = Callable[[fx.Node, Any, ChannelGraph, Env], "list[int] | None"]

MODULE_RULES: Registry[Rule] = Registry("pruning graph rule")


def module_rule(sub: nn.Module) -> Rule:
    """The rule of a torch.nn layer type; other modules are unknown."""
    name = type(sub).__name__
    if type(sub).__module__.startswith("torch.nn.") and name in MODULE_RULES:
        return MODULE_RULES.get(name)
    return _unknown_rule(name)


def function_rule(target: Any) -> Rule:
    rule = FUNCTION_RULES.get(target)
    return rule if rule is not None else _unknown_rule(getattr(target, "__name__", str(target)))


def method_rule(name: str) -> Rule:
    rule = METHOD_RULES.get(name)
    return rule if rule is not None else _unknown_rule(f"Tensor.{name}")


def _unknown_rule(what: str) -> Rule:
    def rule(node: fx.Node, _sub: Any, graph: ChannelGraph, env: Env) -> list[int] | None:
        return unknown(node, graph, env, what)

    return rule


def first_input(node: fx.Node, env: Env) -> list[int] | None:
    arg = node.args[0] if node.args else None
    return env.get(arg) if isinstance(arg, fx.Node) else None


def passthrough(node: fx.Node, sub: Any, graph: ChannelGraph, env: Env) -> list[int] | None:
    """Channel i of the output is channel i of the first input (activations, pooling)."""
    variables, shape = first_input(node, env), shape_of(node)
    if variables is None or shape is None or len(shape) < 2 or shape[1] != len(variables):
        return unknown(node, graph, env, _what(node, sub), "changes the channel axis")
    return variables


def elementwise(node: fx.Node, sub: Any, graph: ChannelGraph, env: Env) -> list[int] | None:
    """add/mul/sub/div: operands with the full channel axis are coupled channel by channel."""
    out = shape_of(node)
    operands = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
    if out is None or len(out) < 2:
        return unknown(node, graph, env, _what(node, sub), "its output has no channel axis")
    full: list[list[int]] = []
    for arg in operands:
        shape = shape_of(arg)
        if shape is None or math.prod(shape) == 1:
            continue  # a number: no channels
        if arg not in env or len(shape) != len(out):
            return unknown(node, graph, env, _what(node, sub),
                           "an operand is a constant or broadcasts across the channel axis")
        if shape[1] == out[1]:
            full.append(env[arg])
        elif shape[1] != 1:
            return unknown(node, graph, env, _what(node, sub), "operands disagree on channels")
    if not full:
        return unknown(node, graph, env, _what(node, sub), "no operand carries the channels")
    for other in full[1:]:
        graph.unify(full[0], other)
    return full[0]


def concatenate(node: fx.Node, sub: Any, graph: ChannelGraph, env: Env) -> list[int] | None:
    """torch.cat along channels: the output's channels are the inputs' in order (offsets)."""
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    out = shape_of(node)
    if (not isinstance(tensors, (list, tuple)) or out is None or len(out) < 2
            or not all(isinstance(t, fx.Node) and t in env for t in tensors)
            or not isinstance(dim, int)):
        return unknown(node, graph, env, "cat", "inputs without a known channel axis")
    parts = [env[t] for t in tensors if isinstance(t, fx.Node)]
    if dim % len(out) == 1:
        return [v for part in parts for v in part]
    for other in parts[1:]:
        graph.unify(parts[0], other)  # along batch or space: the channel axes coincide
    return parts[0]


def flatten(node: fx.Node, sub: Any, graph: ChannelGraph, env: Env) -> list[int] | None:
    """flatten(x, 1): each channel becomes a block of H*W consecutive features."""
    if isinstance(sub, nn.Flatten):
        start, end = sub.start_dim, sub.end_dim
    else:
        start = _arg(node, 1, "start_dim", 0)
        end = _arg(node, 2, "end_dim", -1)
    variables, shape = first_input(node, env), shape_of(_input(node))
    if variables is None or shape is None:
        return unknown(node, graph, env, "flatten", "input without a known channel axis")
    if start % len(shape) >= 2:
        return variables  # the channel axis is untouched
    block = flatten_block(shape, start, end)
    if block is None:
        return unknown(node, graph, env, "flatten", "merges the channel and batch axes")
    return [v for v in variables for _ in range(block)]


def reshape(node: fx.Node, sub: Any, graph: ChannelGraph, env: Env) -> list[int] | None:
    """view/reshape, read from shapes: a flatten after the channel axis, or a pure flatten."""
    variables, before, after = first_input(node, env), shape_of(_input(node)), shape_of(node)
    if variables is not None and before is not None and after is not None and len(after) >= 2 \
            and after[0] == before[0]:
        if after[1] == before[1] and math.prod(after[2:]) == math.prod(before[2:]):
            return variables
        if len(after) == 2 and after[1] == math.prod(before[1:]):
            block = math.prod(before[2:])
            return [v for v in variables for _ in range(block)]
    return unknown(node, graph, env, str(node.target), "reshapes the channel axis")


def reduce(node: fx.Node, sub: Any, graph: ChannelGraph, env: Env) -> list[int] | None:
    """mean/sum/amax over spatial axes keep the channel axis."""
    shape = shape_of(_input(node))
    dims = _arg(node, 1, "dim", None)
    if shape is not None and dims is not None:
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if all(isinstance(d, int) and d % len(shape) >= 2 for d in dims):
            return passthrough(node, sub, graph, env)
    return unknown(node, graph, env, str(node.target), "reduces the batch or channel axis")


def _input(node: fx.Node) -> Any:
    return node.args[0] if node.args else None


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _what(node: fx.Node, sub: Any) -> str:
    if sub is not None:
        return type(sub).__name__
    return getattr(node.target, "__name__", str(node.target))


PASS_MODULES = ("ReLU", "ReLU6", "LeakyReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
                "Hardswish", "Hardsigmoid", "Hardtanh", "Sigmoid", "Tanh", "Softplus",
                "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "Identity", "Upsample",
                "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
                "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
                "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d")
for _name in PASS_MODULES:
    MODULE_RULES.register(_name)(passthrough)
MODULE_RULES.register("Flatten")(flatten)

FUNCTION_RULES: dict[Any, Rule] = {
    **dict.fromkeys((torch.relu, torch.relu_, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu,
                     F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, torch.sigmoid,
                     F.sigmoid, torch.tanh, F.tanh, F.dropout, F.dropout2d, F.interpolate,
                     F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
                     F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                     F.adaptive_avg_pool3d), passthrough),
    **dict.fromkeys((operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
                     operator.truediv, torch.add, torch.mul, torch.sub, torch.div),
                    elementwise),
    torch.cat: concatenate,
    torch.concat: concatenate,
    torch.flatten: flatten,
    torch.reshape: reshape,
    **dict.fromkeys((torch.mean, torch.sum, torch.amax, torch.amin), reduce),
}

METHOD_RULES: dict[str, Rule] = {
    **dict.fromkeys(("relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"),
                    passthrough),
    **dict.fromkeys(("add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"), elementwise),
    "flatten": flatten,
    **dict.fromkeys(("view", "reshape"), reshape),
    **dict.fromkeys(("mean", "sum", "amax", "amin"), reduce),
}
