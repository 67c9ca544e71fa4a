"""A pruning plan: every decision as plain data (JSON), and ``apply_plan`` to replay it.

A structured plan names, for every layer it changes, the indices of the output and input
channels that stay; replaying it needs no tracing, only a model of the same architecture.
It is also the save format of a pruned model (plan + safetensors weights, see ``save.py``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from slimkit.errors import InputError
from slimkit.graph.layers import Surgery, replace_module
from slimkit.graph.slicing import AttrEdit, ParamEdit, apply_attr_edits, apply_param_edits
from slimkit.graph.transformer import surgery_for

PLAN_FORMAT = "slimkit-prune-plan"
PLAN_VERSION = 1
PARAMS_VERSION = 2  # a plan with per-tensor edits (the graph planner of any model)


@dataclass(frozen=True)
class LayerEdit:
    """One layer made smaller: its original channel counts and the channels it keeps (None:
    that axis is unchanged)."""

    name: str
    type: str
    out_channels: int
    in_channels: int | None
    out_keep: tuple[int, ...] | None = None
    in_keep: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("out_keep", "in_keep"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d


@dataclass(frozen=True)
class GroupDecision:
    """What happened to one group of coupled channels (for the report and the plan)."""

    id: int
    layers: tuple[str, ...]
    channels: int
    kept: int
    target: float | None = None  # channels the ratio asked for, before rounding
    note: str | None = None  # why it was rounded, clamped or left whole


@dataclass(frozen=True)
class PrunePlan:
    """Every decision of one pruning run. ``mode`` is structured or unstructured (an
    unstructured plan changes no shapes: its zeros live in the weights)."""

    mode: str
    model: dict[str, Any]
    config: dict[str, Any]
    layers: tuple[LayerEdit, ...] = ()
    groups: tuple[GroupDecision, ...] = ()
    skipped: tuple[dict[str, str], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    params: tuple[ParamEdit, ...] = ()  # per-tensor edits (see ``slicing.py``)
    attributes: tuple[AttrEdit, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        tensors = bool(self.params or self.attributes)
        data = {"format": PLAN_FORMAT, "version": PARAMS_VERSION if tensors else PLAN_VERSION,
                "mode": self.mode, "model": self.model, "config": self.config,
                "layers": [edit.to_dict() for edit in self.layers],
                "groups": [asdict(g) for g in self.groups],
                "skipped": [dict(s) for s in self.skipped], "extra": self.extra}
        if tensors:
            data["params"] = [edit.to_dict() for edit in self.params]
            data["attributes"] = [edit.to_dict() for edit in self.attributes]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrunePlan:
        if data.get("format") != PLAN_FORMAT:
            raise InputError(f"not a slimkit pruning plan (format '{data.get('format')}', "
                             f"expected '{PLAN_FORMAT}')")
        if data.get("version") not in (PLAN_VERSION, PARAMS_VERSION):
            raise InputError(f"pruning plan version {data.get('version')} is not supported "
                             f"by this slimkit (reads versions {PLAN_VERSION} and "
                             f"{PARAMS_VERSION}); upgrade slimkit")
        try:
            layers = tuple(LayerEdit(**{**e, "out_keep": _tuple(e["out_keep"]),
                                        "in_keep": _tuple(e["in_keep"])})
                           for e in data["layers"])
            groups = tuple(GroupDecision(**{**g, "layers": tuple(g["layers"])})
                           for g in data["groups"])
            params = tuple(ParamEdit.from_dict(e) for e in data.get("params", ()))
            attributes = tuple(AttrEdit.from_dict(e) for e in data.get("attributes", ()))
            return cls(data["mode"], dict(data["model"]), dict(data["config"]), layers, groups,
                       tuple(data.get("skipped", ())), dict(data.get("extra", {})), params,
                       attributes)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"the pruning plan is damaged ({type(exc).__name__}: {exc})") \
                from None

    @classmethod
    def from_json(cls, text: str) -> PrunePlan:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InputError(f"the pruning plan is not valid JSON: {exc}") from None


def _tuple(value: list[int] | None) -> tuple[int, ...] | None:
    return tuple(int(v) for v in value) if value is not None else None


def apply_plan(module: nn.Module, plan: PrunePlan) -> nn.Module:
    """Replay ``plan`` on ``module`` (changed in place: pass a fresh model) and return it.

    Every named layer must exist with the type and channel counts the plan was made for;
    otherwise nothing is changed and the error names the layer.

    Example:
        >>> import torch
        >>> from slimkit.testing import tiny_cnn
        >>> edits = (LayerEdit("conv", "Conv2d", 8, 3, out_keep=(0, 2, 5, 7)),
        ...          LayerEdit("bn", "BatchNorm2d", 8, None, out_keep=(0, 2, 5, 7)),
        ...          LayerEdit("fc", "Linear", 4, 8, in_keep=(0, 2, 5, 7)))
        >>> small = apply_plan(tiny_cnn(), PrunePlan("structured", {}, {}, edits))
        >>> small.conv.out_channels, small(torch.zeros(1, 3, 8, 8)).shape
        (4, torch.Size([1, 4]))
    """
    modules = dict(module.named_modules())
    for edit in plan.layers:
        _check_layer(modules, edit)
    for edit in plan.layers:
        new = _surgery(edit, modules[edit.name]).rebuild(modules[edit.name], edit.out_keep,
                                                         edit.in_keep)
        replace_module(module, edit.name, new)
    if plan.params:
        apply_param_edits(module, plan.params)
    if plan.attributes:
        apply_attr_edits(module, plan.attributes)
    if plan.extra.get("bias_shift"):
        apply_shifts(module, plan.extra["bias_shift"])
    return module


def _surgery(edit: LayerEdit, layer: nn.Module) -> Surgery:
    return surgery_for(edit.type, layer)


def _check_layer(modules: dict[str, nn.Module], edit: LayerEdit) -> None:
    layer = modules.get(edit.name)
    if layer is None:
        raise InputError(f"the pruning plan changes layer '{edit.name}', which this model does "
                         "not have; apply the plan to the architecture it was made for")
    if type(layer).__name__ != edit.type:
        raise InputError(f"layer '{edit.name}' is a {type(layer).__name__}; the pruning plan "
                         f"expects a {edit.type}")
    axes = _surgery(edit, layer).axes(layer)
    if axes != (edit.out_channels, edit.in_channels):
        raise InputError(f"layer '{edit.name}' has channels (out, in) {axes}; the pruning plan "
                         f"expects {(edit.out_channels, edit.in_channels)}: a plan applies "
                         "only to the model it was made from (already pruned, or pruned twice?)")
    for keep, size in ((edit.out_keep, edit.out_channels), (edit.in_keep, edit.in_channels)):
        if keep is not None and (not keep or size is None or min(keep) < 0
                                 or max(keep) >= size or list(keep) != sorted(set(keep))):
            raise InputError(f"the pruning plan keeps invalid channels {list(keep)[:8]} of "
                             f"layer '{edit.name}' (it has {size}); the plan is damaged")


def compose_plans(first: PrunePlan, second: PrunePlan) -> PrunePlan:
    """One structured plan equal to applying ``first`` and then ``second`` (made on the model
    ``first`` produced): kept indices are mapped back to the original channels.

    Example:
        >>> a = PrunePlan("structured", {}, {}, (LayerEdit("fc", "Linear", 8, 4, (1, 3, 5, 7)),))
        >>> b = PrunePlan("structured", {}, {}, (LayerEdit("fc", "Linear", 4, 4, (0, 2)),))
        >>> compose_plans(a, b).layers[0].out_keep
        (1, 5)
    """
    if first.mode != "structured" or second.mode != "structured":
        raise InputError("only structured plans compose (unstructured plans change no shapes)")
    edits = {edit.name: edit for edit in first.layers}
    for edit in second.layers:
        base = edits.get(edit.name)
        if base is None:
            edits[edit.name] = edit
            continue
        edits[edit.name] = replace(
            base, out_keep=_compose(base.out_keep, edit.out_keep),
            in_keep=_compose(base.in_keep, edit.in_keep))
    originals = {g.id: g for g in first.groups}
    groups = tuple(replace(g, channels=originals[g.id].channels if g.id in originals
                           else g.channels) for g in second.groups)
    return replace(second, model=first.model, layers=tuple(edits.values()), groups=groups,
                   extra={**first.extra, **second.extra},
                   params=_compose_params(first.params, second.params),
                   attributes=_compose_attributes(first.attributes, second.attributes))


def _compose_params(first: tuple[ParamEdit, ...],
                    second: tuple[ParamEdit, ...]) -> tuple[ParamEdit, ...]:
    edits = {edit.name: edit for edit in first}
    for edit in second:
        base = edits.get(edit.name)
        if base is None:
            edits[edit.name] = replace(edit, shape=edit.shape)
            continue
        outer, inner = dict(base.keep), dict(edit.keep)
        axes = sorted(set(outer) | set(inner))
        keep = tuple((a, _compose(outer.get(a), inner.get(a)) or ()) for a in axes)
        edits[edit.name] = replace(base, keep=keep)
    return tuple(edits.values())


def _compose_attributes(first: tuple[AttrEdit, ...],
                        second: tuple[AttrEdit, ...]) -> tuple[AttrEdit, ...]:
    edits = {(e.module, e.name): e for e in first}
    for edit in second:
        base = edits.get((edit.module, edit.name))
        edits[(edit.module, edit.name)] = edit if base is None else replace(base, new=edit.new)
    return tuple(edits.values())


def _compose(outer: tuple[int, ...] | None,
             inner: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if inner is None:
        return outer
    return inner if outer is None else tuple(outer[i] for i in inner)


def apply_shifts(module: nn.Module, shifts: dict[str, list[float]]) -> None:
    """Add each shift to its layer's bias (the replay of a plan's ``bias_shift``)."""
    for name, shift in shifts.items():
        layer = dict(module.named_modules()).get(name)
        bias = getattr(layer, "bias", None)
        if not isinstance(bias, nn.Parameter) or bias.numel() != len(shift):
            raise InputError(f"the pruning plan shifts the bias of '{name}' by {len(shift)} "
                             "values, but this model has no such bias; the plan is damaged or "
                             "made for another architecture")
        with torch.no_grad():
            bias.add_(torch.tensor(shift, dtype=bias.dtype, device=bias.device))
