"""Trace a model with ``torch.export`` and build its axis graph (``axes.py``): parameters and
buffers get fresh atoms, model inputs and constants are fixed, every op node is visited by its
rule (``axes_ops.py``, ``axes_layers.py``), and whatever reaches an output is pinned."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from slimkit.errors import InputError
from slimkit.graph import axes_attention as _attention  # noqa: F401  (registers its rules)
from slimkit.graph import axes_layers as _layers  # noqa: F401  (registers the layer rules)
from slimkit.graph import axes_ops as _ops  # noqa: F401  (registers the op rules)
from slimkit.graph import axes_shapes as _shapes  # noqa: F401  (registers the layout rules)
from slimkit.graph.axes import AxisGraph, fixed_layout
from slimkit.graph.axes_rules import OpContext, Site, Value, rule_for
from slimkit.model import Model, eval_mode


@dataclass
class AxisTrace:
    """The axis graph of one model, the reshape sites (for size attributes) and the kinds of
    its lifted tensors (``parameter`` or ``buffer``, by name)."""

    graph: AxisGraph
    sites: list[Site] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)


def trace_axes(model: Model, batch: dict[str, Any] | None = None) -> AxisTrace:
    """Export ``model`` on a synthetic batch of 2 (or ``batch``) and build its axis graph.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> trace = trace_axes(tiny_model("mlp"))
        >>> [(g.producers, g.prunable) for g in trace.graph.groups()]
        [(['fc1'], True), (['fc2'], False)]
    """
    from slimkit.data import synthetic

    module = model.require_module("structured pruning")
    data = batch or synthetic(model.inputs, 2, seed=0, dynamic=16).first_batch(2)
    exported = _export(model, module, model.torch_args(data))
    trace = AxisTrace(AxisGraph())
    env: dict[fx.Node, Value] = {}
    weights: set[fx.Node] = set()
    lifted = _lifted(exported)
    for node in exported.graph_module.graph.nodes:
        if node.op == "placeholder":
            env[node] = _placeholder(node, lifted, trace, weights)
        elif node.op == "output":
            for out in fx.node.map_arg(node.args, lambda n: n) if node.args else ():
                _pin_outputs(out, env, trace.graph)
        elif node.op == "call_function":
            env[node] = _visit(node, trace, env, weights)
    return trace


def _export(model: Model, module: torch.nn.Module, args: tuple[Any, ...]) -> Any:
    try:
        with eval_mode(module), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(module, args, strict=False)
    except Exception as exc:  # torch.export raises many types; the user needs one line
        raise InputError(
            f"'{model.name}' cannot be traced with torch.fx or torch.export "
            f"({type(exc).__name__}): structured pruning needs a forward without "
            "data-dependent control flow; make it traceable or use unstructured pruning"
        ) from None


def _lifted(exported: Any) -> dict[str, tuple[str, str]]:
    """Placeholder name -> (kind, qualified name) of parameters, buffers and constants."""
    out = {}
    for spec in exported.graph_signature.input_specs:
        kind = str(getattr(spec.kind, "name", spec.kind)).lower()
        name = getattr(spec.arg, "name", None)
        if name is not None and spec.target is not None:
            out[name] = (kind, str(spec.target))
    return out


def _placeholder(node: fx.Node, lifted: dict[str, tuple[str, str]], trace: AxisTrace,
                 weights: set[fx.Node]) -> Value:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return None
    shape = tuple(int(d) for d in val.shape)
    kind, target = lifted.get(node.name, ("user_input", ""))
    if kind in ("parameter", "buffer"):
        layout = tuple(trace.graph.tracked(d) for d in shape)
        trace.graph.params[target] = layout
        trace.kinds[target] = kind
        weights.add(node)
        return layout
    if kind != "user_input":
        weights.add(node)  # a constant
    return fixed_layout(shape)


def _visit(node: fx.Node, trace: AxisTrace, env: dict[fx.Node, Value],
           weights: set[fx.Node]) -> Value:
    module, module_type = _module(node)
    ctx = OpContext(node, trace.graph, env, weights, module, module_type, trace.sites)
    rule = rule_for(node)
    value = rule(ctx) if rule is not None else ctx.unknown()
    if all(n in weights for n in node.all_input_nodes):  # computed from weights alone
        weights.add(node)
    return value


def _module(node: fx.Node) -> tuple[str, str]:
    """The qualified name and type of the innermost module that ran ``node``."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, kind = list(stack.values())[-1]
    name = getattr(kind, "__name__", None) or str(kind).rsplit(".", 1)[-1].rstrip("'>")
    return _clean(str(path)), name


def _clean(path: str) -> str:
    """``L['self'].model.encoder`` / ``model.encoder`` -> ``model.encoder``."""
    for prefix in ("L['self'].", "L['self']"):
        if path.startswith(prefix):
            path = path[len(prefix):]
    return path


def _pin_outputs(value: Any, env: dict[fx.Node, Value], graph: AxisGraph) -> None:
    if isinstance(value, fx.Node):
        found = env.get(value)
        if isinstance(found, tuple):
            graph.pin(found, "reaches the model output")
        elif isinstance(found, list):
            for part in found:
                if isinstance(part, tuple):
                    graph.pin(part, "reaches the model output")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _pin_outputs(item, env, graph)
