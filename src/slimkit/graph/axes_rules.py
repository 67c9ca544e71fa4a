"""The registry of op rules of the axis graph (``OP_RULES``, keyed by ATen op name without its
overload: ``linear``, ``view``, ``add``...) and the :class:`OpContext` a rule reads. The rules
live in ``axes_ops.py`` (element-wise, shape and index ops) and ``axes_layers.py`` (layers with
weights, attention, recurrent layers). An op with no rule is unknown: every atom flowing into
it is pinned, naming the op and the module that called it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from slimkit.graph.axes import Axis, AxisGraph, Layout, fixed_layout
from slimkit.registry import Registry

Value = Any  # a Layout, a list of Values (tuple outputs), or None (no tensor)
Rule = Callable[["OpContext"], Value]
OP_RULES: Registry[Rule] = Registry("axis graph op rule")


@dataclass(frozen=True)
class Site:
    """A reshape-like op inside a module: its input and output layouts, read after tracing
    to update the module's size attributes (``num_heads``, ``split_size``...)."""

    module: str
    layouts: tuple[Layout, ...]


@dataclass
class OpContext:
    """One node being visited: the graph, the values of earlier nodes, and helpers."""

    node: fx.Node
    graph: AxisGraph
    env: dict[fx.Node, Value]
    params: set[fx.Node]
    module: str
    module_type: str
    sites: list[Site] = field(default_factory=list)

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        if len(self.node.args) > index:
            return self.node.args[index]
        return self.node.kwargs.get(name, default)

    def layout(self, x: Any) -> Layout | None:
        value = self.env.get(x) if isinstance(x, fx.Node) else None
        return value if isinstance(value, tuple) else None

    def shape(self, x: Any = None) -> tuple[int, ...] | None:
        """The static shape of node ``x`` (default: this node's output)."""
        val = (self.node if x is None else x).meta.get("val") if isinstance(
            x if x is not None else self.node, fx.Node) else None
        if isinstance(val, torch.Tensor):
            return tuple(int(d) for d in val.shape)
        return None

    def is_param(self, x: Any) -> bool:
        return isinstance(x, fx.Node) and x in self.params

    def tensors(self) -> list[fx.Node]:
        """Every tensor input of the node, once, in order."""
        found: list[fx.Node] = []

        def collect(node: fx.Node) -> fx.Node:
            found.append(node)
            return node

        fx.node.map_arg((self.node.args, self.node.kwargs), collect)
        return [n for n in dict.fromkeys(found) if self.layout(n) is not None]

    def reason(self, what: str) -> str:
        where = f"'{self.module}' ({self.module_type})" if self.module else "the model"
        return f"{what} in {where}"

    def unify(self, a: Axis, b: Axis, what: str) -> None:
        self.graph.unify(a, b, self.reason(what))

    def site(self, *layouts: Layout | None) -> None:
        self.sites.append(Site(self.module, tuple(x for x in layouts if x is not None)))

    def fixed_output(self) -> Value:
        """Fixed layouts for this node's output(s)."""
        return _fixed_value(self.node.meta.get("val"))

    def unknown(self, why: str = "no rule for this op") -> Value:
        """Pin everything flowing in; the output is fixed."""
        op = op_name(self.node)
        reason = self.reason(f"'{op}' ({why})")
        entry = {"layer": self.module or "the model's forward", "type": op, "why": why}
        inputs = self.tensors()
        if inputs and entry not in self.graph.skipped:
            self.graph.skipped.append(entry)
        for node in inputs:
            self.graph.pin(self.layout(node), reason)
        return self.fixed_output()


def _fixed_value(val: Any) -> Value:
    if isinstance(val, torch.Tensor):
        return fixed_layout(tuple(int(d) for d in val.shape))
    if isinstance(val, (list, tuple)):
        return [_fixed_value(v) for v in val]
    return None


def op_name(node: fx.Node) -> str:
    """``linear`` for ``aten.linear.default``; in-place ops share their op's rule."""
    target = node.target
    name = str(getattr(target, "_opname", None) or getattr(target, "__name__", str(target)))
    if name.endswith("_") and not name.startswith("_") and len(name) > 2:
        name = name[:-1]
    return name


def tuple_shapes(val: Any) -> list[tuple[int, ...]] | None:
    """The shapes of a tuple-valued node's tensors (split, unbind, max with a dim...)."""
    if isinstance(val, (list, tuple)) and all(hasattr(v, "shape") for v in val):
        return [tuple(int(d) for d in v.shape) for v in val]
    return None


def rule_for(node: fx.Node) -> Rule | None:
    name = op_name(node)
    return OP_RULES.get(name) if name in OP_RULES else None


def register(*names: str) -> Callable[[Rule], Rule]:
    """Register one rule under several op names."""
    def wrap(rule: Rule) -> Rule:
        for name in names:
            OP_RULES.register(name)(rule)
        return rule

    return wrap

