"""A low-rank plan: the factorised layers and their ranks as plain JSON data, and
``apply_lowrank_plan`` to replay it on a fresh model of the same architecture (the saved
weights are then loaded into the empty factors)."""

from __future__ import annotations

from typing import Any

from torch import nn

from slimkit.errors import InputError
from slimkit.lowrank.factorize import FACTORIZERS
from slimkit.model import Model

PLAN_FORMAT = "slimkit-lowrank-plan"
PLAN_VERSION = 1


def make_plan(model: Model, config: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The plan document: the source model, the config and ``{name, type, kind, ranks}`` of
    every factorised layer."""
    return {"format": PLAN_FORMAT, "version": PLAN_VERSION,
            "model": {"name": model.name, "source": model.source,
                      "inputs": [spec.to_dict() for spec in model.inputs]},
            "config": config,
            "layers": [{k: layer[k] for k in ("name", "type", "kind", "ranks")}
                       for layer in layers]}


def check_plan(plan: Any) -> dict[str, Any]:
    """``plan`` if it is a low-rank plan this slimkit reads; a clear error otherwise."""
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise InputError("not a slimkit low-rank plan (format "
                         f"'{plan.get('format') if isinstance(plan, dict) else None}', "
                         f"expected '{PLAN_FORMAT}')")
    if plan.get("version") != PLAN_VERSION:
        raise InputError(f"low-rank plan version {plan.get('version')} is not supported by "
                         f"this slimkit (reads version {PLAN_VERSION}); upgrade slimkit")
    layers = plan.get("layers")
    if not isinstance(layers, list) or not all(
            isinstance(e, dict) and {"name", "type", "kind", "ranks"} <= set(e) for e in layers):
        raise InputError("the low-rank plan is damaged: 'layers' must list name, type, kind "
                         "and ranks of every factorised layer")
    return plan


def apply_lowrank_plan(module: nn.Module, plan: dict[str, Any]) -> nn.Module:
    """Replace every layer the plan names by an empty factorised skeleton of its ranks
    (``module`` is changed in place: pass a fresh model); load the weights afterwards.

    Example:
        >>> from slimkit.testing import tiny_mlp
        >>> plan = {"format": PLAN_FORMAT, "version": 1, "layers": [
        ...     {"name": "fc1", "type": "Linear", "kind": "linear", "ranks": [2]}]}
        >>> apply_lowrank_plan(tiny_mlp(), plan).fc1[0].out_features
        2
    """
    from slimkit.graph.layers import replace_module

    modules = dict(module.named_modules())
    edits = []
    for entry in check_plan(plan)["layers"]:
        layer = modules.get(entry["name"])
        if layer is None or type(layer).__name__ != entry["type"]:
            found = "no such layer" if layer is None else f"a {type(layer).__name__}"
            raise InputError(f"the low-rank plan factorises {entry['type']} '{entry['name']}'; "
                             f"this model has {found}: apply the plan to the architecture it "
                             "was made for")
        ranks = tuple(int(r) for r in entry["ranks"])
        edits.append((entry["name"], FACTORIZERS.get(entry["kind"]).skeleton(layer, ranks)))
    for name, new in edits:
        replace_module(module, name, new)
    return module
