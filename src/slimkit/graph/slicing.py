"""Generic surgery for any model: every parameter and buffer a plan names keeps the positions
of its axes the plan keeps (:class:`ParamEdit`; tied tensors are replaced everywhere they are
used), then the modules that hold them get their size attributes back in line with their
weights (``SIZE_RULES``, by layer type: ``in_features``, ``out_channels``, ``hidden_size`` of
recurrent layers...) and the size attributes the plan names (:class:`AttrEdit`: ``num_heads``
of an attention module...). The old tensors are never changed: the model gets new ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimkit.errors import InputError
from slimkit.registry import Registry


@dataclass(frozen=True)
class ParamEdit:
    """A parameter or buffer: its original shape and, per changed axis, the kept positions."""

    name: str
    shape: tuple[int, ...]
    keep: tuple[tuple[int, tuple[int, ...]], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape),
                "keep": {str(axis): list(kept) for axis, kept in self.keep}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParamEdit:
        keep = tuple((int(axis), tuple(int(i) for i in kept))
                     for axis, kept in dict(data["keep"]).items())
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), keep)


@dataclass(frozen=True)
class AttrEdit:
    """A size attribute of a module (``num_heads``...) set from ``old`` to ``new``."""

    module: str
    name: str
    old: int
    new: int

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "name": self.name, "old": self.old, "new": self.new}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttrEdit:
        return cls(str(data["module"]), str(data["name"]), int(data["old"]), int(data["new"]))


SizeRule = Callable[[Any, dict[str, tuple[int, ...]]], None]
SIZE_RULES: Registry[SizeRule] = Registry("layer size rule")


def apply_param_edits(root: nn.Module, edits: tuple[ParamEdit, ...]) -> None:
    """Replace every named tensor by its kept positions (checked against the original shape
    first: nothing changes when one does not fit)."""
    owners = _owners(root)
    found = []
    for edit in edits:
        tensor = _tensor(root, edit.name)
        if tuple(tensor.shape) != edit.shape:
            raise InputError(f"'{edit.name}' has shape {tuple(tensor.shape)}; the pruning plan "
                             f"expects {edit.shape}: a plan applies only to the model it was "
                             "made from (already pruned, or pruned twice?)")
        for axis, kept in edit.keep:
            if not kept or min(kept) < 0 or max(kept) >= edit.shape[axis] \
                    or list(kept) != sorted(set(kept)):
                raise InputError(f"the pruning plan keeps invalid positions of '{edit.name}' "
                                 f"(axis {axis}); the plan is damaged")
        found.append((edit, tensor))
    touched: dict[int, tuple[nn.Module, dict[str, tuple[int, ...]]]] = {}
    with torch.no_grad():
        for edit, tensor in found:
            new = tensor.detach()
            for axis, kept in edit.keep:
                new = new.index_select(axis, torch.as_tensor(kept, device=new.device))
            replacement: torch.Tensor = nn.Parameter(new.clone(),
                                                     requires_grad=tensor.requires_grad) \
                if isinstance(tensor, nn.Parameter) else new.clone()
            for module, attr, is_param in owners.get(id(tensor), []):  # tied: one new tensor
                old_shapes = touched.setdefault(id(module), (module, {}))[1]
                old_shapes[attr] = tuple(tensor.shape)
                if is_param:
                    module._parameters[attr] = replacement  # type: ignore[assignment]
                else:
                    module._buffers[attr] = replacement
    for module, old_shapes in touched.values():
        fix_sizes(module, old_shapes)


def apply_attr_edits(root: nn.Module, edits: tuple[AttrEdit, ...]) -> None:
    for edit in edits:
        module = root.get_submodule(edit.module) if edit.module else root
        value = getattr(module, edit.name, None)
        if value == edit.new:
            continue  # already in line with its weights
        if value != edit.old:
            raise InputError(f"'{edit.module}.{edit.name}' is {value}; the pruning plan expects "
                             f"{edit.old}: apply it to the model it was made from")
        setattr(module, edit.name, edit.new)


def has_size_rule(module: nn.Module) -> bool:
    """Whether ``module``'s type (or a base) has a size rule: its sizes follow its weights."""
    return any(cls.__name__ in SIZE_RULES for cls in type(module).__mro__)


def fix_sizes(module: nn.Module, old_shapes: dict[str, tuple[int, ...]]) -> None:
    """Run the size rule of ``module``'s type (its own or a base class's)."""
    for cls in type(module).__mro__:
        if cls.__name__ in SIZE_RULES:
            SIZE_RULES.get(cls.__name__)(module, old_shapes)
            return
    if hasattr(module, "normalized_shape") and isinstance(getattr(module, "weight", None),
                                                          torch.Tensor):
        _norm(module, old_shapes)


def _owners(root: nn.Module) -> dict[int, list[tuple[nn.Module, str, bool]]]:
    """Every (module, attribute) holding each tensor: tied tensors have several."""
    owners: dict[int, list[tuple[nn.Module, str, bool]]] = {}
    for module in root.modules():
        for attr, param in module._parameters.items():
            if param is not None:
                owners.setdefault(id(param), []).append((module, attr, True))
        for attr, buffer in module._buffers.items():
            if buffer is not None:
                owners.setdefault(id(buffer), []).append((module, attr, False))
    return owners


def _tensor(root: nn.Module, name: str) -> torch.Tensor:
    path, _, attr = name.rpartition(".")
    try:
        module = root.get_submodule(path) if path else root
    except AttributeError:
        module = None
    tensor = getattr(module, attr, None) if module is not None else None
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"the pruning plan changes '{name}', which this model does not have; "
                         "apply it to the architecture it was made for")
    return tensor


# ---- size rules -------------------------------------------------------------------------

@SIZE_RULES.register("Linear")
def _linear(m: Any, old: dict[str, tuple[int, ...]]) -> None:
    m.out_features, m.in_features = int(m.weight.shape[0]), int(m.weight.shape[1])


@SIZE_RULES.register("_ConvNd")
def _conv(m: Any, old: dict[str, tuple[int, ...]]) -> None:
    w = m.weight
    if m.transposed:
        m.in_channels, m.out_channels = int(w.shape[0]), int(w.shape[1] * m.groups)
        return
    before = old.get("weight", tuple(w.shape))
    depthwise = m.groups > 1 and m.groups == m.in_channels and before[1] == 1
    if depthwise:
        per_input = before[0] // m.in_channels
        m.in_channels = m.groups = int(w.shape[0]) // per_input
    else:
        m.in_channels = int(w.shape[1]) * m.groups
    m.out_channels = int(w.shape[0])


@SIZE_RULES.register("_NormBase")
def _batch_norm(m: Any, old: dict[str, tuple[int, ...]]) -> None:
    reference = m.weight if m.weight is not None else m.running_mean
    if reference is not None:
        m.num_features = int(reference.shape[0])


def _norm(m: Any, old: dict[str, tuple[int, ...]]) -> None:
    if isinstance(getattr(m, "weight", None), torch.Tensor):
        m.normalized_shape = tuple(int(d) for d in m.weight.shape)


SIZE_RULES.register("LayerNorm")(_norm)
SIZE_RULES.register("RMSNorm")(_norm)


@SIZE_RULES.register("GroupNorm")
def _group_norm(m: Any, old: dict[str, tuple[int, ...]]) -> None:
    if m.weight is not None:
        m.num_channels = int(m.weight.shape[0])


@SIZE_RULES.register("Embedding")
def _embedding(m: Any, old: dict[str, tuple[int, ...]]) -> None:
    m.num_embeddings, m.embedding_dim = int(m.weight.shape[0]), int(m.weight.shape[1])


@SIZE_RULES.register("RNNBase")
def _recurrent(m: Any, old: dict[str, tuple[int, ...]]) -> None:
    m.input_size = int(m.weight_ih_l0.shape[1])
    m.hidden_size = int(m.weight_hh_l0.shape[1])
    m._init_flat_weights()


@SIZE_RULES.register("MultiheadAttention")
def _multihead(m: Any, old: dict[str, tuple[int, ...]]) -> None:
    if m.in_proj_weight is not None:
        m.embed_dim = m.kdim = m.vdim = int(m.in_proj_weight.shape[1])
    m.head_dim = m.embed_dim // m.num_heads


@SIZE_RULES.register("Conv1D")
def _hf_conv1d(m: Any, old: dict[str, tuple[int, ...]]) -> None:
    """transformers' Conv1D (GPT-2): weight (in, out)."""
    m.nf = int(m.weight.shape[1])
    if hasattr(m, "nx"):
        m.nx = int(m.weight.shape[0])
