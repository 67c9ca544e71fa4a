"""Tracing a model into its channel-dependency graph (``build_graph``): ``torch.fx`` for the op
targets, one forward pass for the shapes, then the rules of ``rules.py`` and ``layers.py``."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from slimkit.errors import InputError
from slimkit.graph import layers as _layers  # noqa: F401  (registers Conv, Linear, BN rules)
from slimkit.graph.channels import (
    SHAPE_KEY,
    ChannelGraph,
    Env,
    layer_vars,
    shape_of,
    tensor_args,
    unknown,
)
from slimkit.graph.rules import function_rule, method_rule, module_rule
from slimkit.model import Model, eval_mode
from slimkit.selector import Layer, Selector


def build_graph(model: Model, exclude: tuple[str, ...] = ()) -> ChannelGraph:
    """Trace ``model`` and derive its channel dependencies; ``exclude`` rules pin layers.

    The model runs once on a synthetic input for the shapes, in eval mode (the training flags
    of its modules are restored afterwards; no parameter or statistic changes).

    Example:
        >>> from slimkit.testing import tiny_model
        >>> graph = build_graph(tiny_model("cnn"))
        >>> [(g.producers, g.layers, g.prunable) for g in graph.groups()]
        [(['conv'], ['conv', 'bn', 'fc'], True), (['fc'], ['fc'], False)]
    """
    module = model.require_module("structured pruning")
    traced = _trace(model, module)
    graph = ChannelGraph()
    _propagate(traced, graph)
    _pin_excluded(module, graph, exclude)
    return graph


def _trace(model: Model, module: nn.Module) -> fx.GraphModule:
    from slimkit.data import synthetic

    try:
        traced = fx.symbolic_trace(module)
    except Exception as exc:  # fx raises many types; the user needs the failing op
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise InputError(
            f"'{model.name}' cannot be traced with torch.fx ({type(exc).__name__}: {first}); "
            "structured pruning needs a forward without data-dependent Python control flow: "
            "make that part traceable, or use unstructured pruning for this model"
        ) from exc
    # batch 2, so a batch axis is never mistaken for a broadcast axis of size 1
    args = model.torch_args(synthetic(model.inputs, 2, seed=0, dynamic=16).first_batch(2))
    try:
        with eval_mode(module), torch.no_grad():
            _ShapeRecorder(traced).run(*args)
    except Exception as exc:  # any op may fail on inputs of the wrong shape
        shapes = [list(a.shape) for a in args]
        raise InputError(
            f"running '{model.name}' on a synthetic input of shape {shapes} failed while "
            f"tracing ({type(exc).__name__}: {str(exc).strip()[:200]}); declare the model's "
            "input shape (--input-shape)"
        ) from exc
    return traced


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph once and records every tensor output's shape on its node."""

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta[SHAPE_KEY] = tuple(int(d) for d in result.shape)
        return result


def _propagate(traced: fx.GraphModule, graph: ChannelGraph) -> None:
    env: Env = {}
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            shape = shape_of(node)
            if shape is not None and len(shape) >= 2:
                env[node] = graph.new_vars(shape[1], f"input:{node.name}", "is a model input")
        elif node.op == "output":
            for arg in tensor_args(node, env):
                graph.pin(env[arg], "reaches the model output")
        elif node.op != "get_attr":  # constants: pinned by the op that uses them
            out = _visit(node, traced, graph, env, calls)
            if out is not None:
                env[node] = out


def _visit(node: fx.Node, traced: fx.GraphModule, graph: ChannelGraph, env: Env,
           calls: dict[str, int]) -> list[int] | None:
    if node.op == "call_module":
        sub = traced.get_submodule(str(node.target))
        if calls[str(node.target)] > 1 and _has_state(sub):
            return unknown(node, graph, env, type(sub).__name__,
                           "called more than once (shared weights)")
        return module_rule(sub)(node, sub, graph, env)
    if node.op == "call_function":
        return function_rule(node.target)(node, None, graph, env)
    return method_rule(str(node.target))(node, None, graph, env)


def _has_state(sub: nn.Module) -> bool:
    """Whether a module holds weights or statistics (calling it twice then shares them)."""
    return any(True for _ in sub.parameters()) or any(True for _ in sub.buffers())


def _pin_excluded(module: nn.Module, graph: ChannelGraph, exclude: tuple[str, ...]) -> None:
    """Pin the channels of excluded layers (and of the layers inside excluded containers)."""
    if not exclude:
        return
    layers = [Layer(name, type(sub).__name__, name) for name, sub in module.named_modules()
              if name]
    for rule in exclude:
        chosen = {layer.name for layer in Selector((rule,)).select(layers)}
        for node in graph.layers.values():
            if node.name in chosen or any(node.name.startswith(c + ".") for c in chosen):
                graph.pin(layer_vars(node), f"has layers excluded by rule '{rule}'")
