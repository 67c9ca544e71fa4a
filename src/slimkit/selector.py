"""One way to pick layers, used by every technique: exact names, regular expressions or op types.

Rules are strings: ``"name:model.encoder.layer.0.output.dense"`` (exact), ``"re:layer\\.0\\."``
(a regular expression searched in the name) or ``"type:Conv"`` (an op or module type). A plain
string is a regular expression. A rule that matches nothing is an error, so a typo never
silently quantizes or prunes the layer the user meant to protect.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from slimkit.errors import InputError


@dataclass(frozen=True)
class Layer:
    """What a rule is matched against: a layer's names (ONNX node name, torch module path) and
    its type."""

    name: str
    type: str
    module_path: str = ""


@dataclass(frozen=True)
class Selector:
    """Example:
    >>> sel = Selector(("type:Conv", "re:fc$"))
    >>> layers = [Layer("c1", "Conv"), Layer("m.fc", "Gemm"), Layer("x", "MatMul")]
    >>> [layer.name for layer in sel.select(layers)]
    ['c1', 'm.fc']
    """

    rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for rule in self.rules:
            kind, _, pattern = _split(rule)
            if not pattern:
                raise InputError(f"layer rule '{rule}' is empty after '{kind}:'")
            if kind == "re":
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise InputError(f"layer rule '{rule}' is not a valid regex: {exc}") from None

    def select(self, layers: Iterable[Layer], validate: bool = True) -> list[Layer]:
        """The layers that match any rule; with ``validate`` every rule must match something."""
        layers = list(layers)
        chosen: dict[str, Layer] = {}
        for rule in self.rules:
            hits = [layer for layer in layers if _matches(rule, layer)]
            if validate and not hits:
                sample = ", ".join(sorted({layer.type for layer in layers})[:12])
                raise InputError(
                    f"layer rule '{rule}' matches no layer; rules are name:EXACT, re:REGEX or "
                    f"type:OP (types here: {sample})"
                )
            chosen.update({layer.name: layer for layer in hits})
        return [layer for layer in layers if layer.name in chosen]


def _split(rule: str) -> tuple[str, str, str]:
    kind, sep, pattern = rule.partition(":")
    if sep and kind in ("name", "re", "type"):
        return kind, sep, pattern
    return "re", ":", rule


def _matches(rule: str, layer: Layer) -> bool:
    kind, _, pattern = _split(rule)
    names = [n for n in (layer.name, layer.module_path) if n]
    if kind == "name":
        return pattern in names
    if kind == "type":
        return layer.type == pattern
    return any(re.search(pattern, n) for n in names)


def module_path_of_onnx_node(node_name: str) -> str:
    """The torch module a TorchScript-exported node came from.

    The exporter names scopes by attribute, and a called container's children by the
    container's attribute plus their own (``/features/features.0/Conv``), while uncalled
    containers (ModuleList) only show in the child's scope (``/encoder/layer.0/...``).

    Example:
        >>> module_path_of_onnx_node("/features/features.0/Conv")
        'features.0'
        >>> module_path_of_onnx_node("/model/encoder/layer.0/output/dense/MatMul")
        'model.encoder.layer.0.output.dense'
        >>> module_path_of_onnx_node("/layer2/layer2.0/downsample/downsample.0/Conv")
        'layer2.0.downsample.0'
    """
    parts = [p for p in node_name.split("/") if p][:-1]
    if not parts:
        return node_name
    path, last = parts[0], parts[0]
    for part in parts[1:]:
        path += part[len(last):] if part.startswith(last + ".") else f".{part}"
        last = part
    return path
