"""The channel-dependency graph: which output channels of which layers must be removed together.

The model is traced once with ``torch.fx`` (op and module targets, never autograd node names)
and shapes are propagated on one sample. Every channel of every tensor is described by a
*channel variable*; layers that create channels (a convolution's outputs) create variables,
pass-through ops (activations, pooling, BatchNorm, depthwise convolution) hand them on,
residual additions unify the variables of their inputs, ``torch.cat`` concatenates them and
``flatten`` into a ``Linear`` expands each into a block of features. Variables unified into one
*class* are one coupled channel; classes sharing a producing layer form a *group*, the unit
that is ranked and pruned. Variables that reach a model input or output, an excluded layer or
an op the graph does not understand are *pinned*: their group is left unpruned and the reason
is reported, so an unknown op never yields a broken model.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from torch import fx


class LayerKind(str, enum.Enum):
    CONV = "conv"  # weight (out, in, ...): creates output channels, consumes input channels
    DEPTHWISE = "depthwise"  # groups == in_channels: each output channel follows its input
    LINEAR = "linear"  # weight (out, in) on a (batch, features) input
    NORM = "norm"  # per-channel parameters and statistics (BatchNorm)


@dataclass
class LayerNode:
    """A layer whose shape follows the channels: the variables of its output and input axes."""

    name: str
    type: str
    kind: LayerKind
    out_vars: list[int]
    in_vars: list[int] | None = None


@dataclass
class ChannelGroup:
    """Coupled channels ranked and pruned as one: ``classes`` in a fixed order."""

    id: int
    classes: list[int]
    producers: list[str]
    layers: list[str]
    pinned: list[str] = field(default_factory=list)  # why it must stay whole; empty: prunable

    @property
    def prunable(self) -> bool:
        return not self.pinned


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class ChannelGraph:
    """The traced dependency graph of one model (see the module docstring)."""

    layers: dict[str, LayerNode] = field(default_factory=dict)
    producer: list[str] = field(default_factory=list)  # variable -> what created it
    pins: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    _uf: _UnionFind = field(default_factory=_UnionFind)

    def new_vars(self, count: int, producer: str, pin: str | None = None) -> list[int]:
        made = [self._uf.add() for _ in range(count)]
        self.producer.extend([producer] * count)
        if pin:
            self.pin(made, pin)
        return made

    def unify(self, a: list[int], b: list[int]) -> None:
        for x, y in zip(a, b, strict=True):
            self._uf.union(x, y)

    def pin(self, variables: list[int], reason: str) -> None:
        self.pins.extend((v, reason) for v in variables)

    def class_of(self, variable: int) -> int:
        return self._uf.find(variable)

    def classes_of(self, variables: list[int]) -> list[int]:
        return [self._uf.find(v) for v in variables]

    def groups(self) -> list[ChannelGroup]:
        """The groups of coupled channels, in the order their first layer was traced."""
        first_var: dict[str, int] = {}
        for var, producer in enumerate(self.producer):
            first_var.setdefault(producer, var)
        link = _UnionFind()
        for _ in self.producer:
            link.add()
        for var, producer in enumerate(self.producer):
            link.union(self.class_of(var), self.class_of(first_var[producer]))
        classes: dict[int, dict[int, None]] = {}  # group root -> its classes, ordered
        producers: dict[int, dict[str, None]] = {}
        for var, producer in enumerate(self.producer):
            cls = self.class_of(var)
            classes.setdefault(link.find(cls), {})[cls] = None
            producers.setdefault(link.find(cls), {})[producer] = None
        by_root = {root: ChannelGroup(i, list(classes[root]), list(producers[root]), [])
                   for i, root in enumerate(classes)}
        for var, reason in self.pins:
            group = by_root[link.find(self.class_of(var))]
            if reason not in group.pinned:
                group.pinned.append(reason)
        root_of = {cls: root for root, group in by_root.items() for cls in group.classes}
        for node in self.layers.values():
            for root in dict.fromkeys(root_of[c] for c in self.classes_of(layer_vars(node))):
                by_root[root].layers.append(node.name)
        groups = [g for g in by_root.values() if any(p in self.layers for p in g.producers)]
        for number, group in enumerate(groups):
            group.id = number
        return groups


def layer_vars(node: LayerNode) -> list[int]:
    """Every channel variable a layer touches (output axis, then input axis)."""
    return node.out_vars + (node.in_vars or [])


Env = dict[fx.Node, list[int]]
SHAPE_KEY = "slimkit_shape"  # where tracing records each node's output shape


def tensor_args(node: fx.Node, env: Env) -> list[fx.Node]:
    """The inputs of ``node`` that carry channels, each once, in order."""
    found: list[fx.Node] = []

    def collect(arg: fx.Node) -> fx.Node:
        found.append(arg)
        return arg

    fx.node.map_arg((node.args, node.kwargs), collect)
    return [n for n in dict.fromkeys(found) if n in env]


def shape_of(node: Any) -> tuple[int, ...] | None:
    """The output shape recorded for ``node`` while tracing; None for non-tensors."""
    if not isinstance(node, fx.Node):
        return None
    shape = node.meta.get(SHAPE_KEY)
    return tuple(shape) if shape is not None else None


def unknown(node: fx.Node, graph: ChannelGraph, env: Env,
            what: str, why: str = "no pruning rule for it") -> list[int] | None:
    """Pin every channel that flows into ``node`` and give its output fresh pinned channels."""
    name = str(node.target) if node.op == "call_module" else node.name
    reason = f"flows through '{name}' ({what}): {why}"
    inputs = tensor_args(node, env)
    entry = {"layer": name, "type": what, "why": why}
    if (inputs or node.op == "call_module") and entry not in graph.skipped:
        graph.skipped.append(entry)
    for arg in inputs:
        graph.pin(env[arg], reason)
    shape = shape_of(node)
    if shape is None or len(shape) < 2:
        return None
    return graph.new_vars(shape[1], f"op:{node.name}", reason)


def flatten_block(shape: tuple[int, ...], start: int, end: int) -> int | None:
    """Features per channel when dims ``start..end`` of ``shape`` are flattened (start = 1);
    None when the channel axis would merge with the batch axis.

    Example:
        >>> flatten_block((2, 8, 3, 3), 1, -1), flatten_block((2, 8, 3, 3), 1, 2)
        (9, 3)
    """
    rank = len(shape)
    start, end = start % rank, end % rank
    if start != 1:
        return None
    return math.prod(shape[2:end + 1])
