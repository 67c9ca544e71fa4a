"""Pruning test helpers."""

from __future__ import annotations

import torch
from torch import nn

from slimkit.graph.plan import PrunePlan


def zero_removed(module: nn.Module, plan: PrunePlan) -> nn.Module:
    """Zero, in place, every weight slice ``plan`` removes (output rows, norm scales and
    shifts, input columns): the removed channels then carry exact zeros, so removing them must
    leave the outputs unchanged."""
    modules = dict(module.named_modules())
    with torch.no_grad():
        for edit in plan.layers:
            layer = modules[edit.name]
            if edit.out_keep is not None:
                gone = sorted(set(range(edit.out_channels)) - set(edit.out_keep))
                layer.weight[gone] = 0
                if layer.bias is not None:
                    layer.bias[gone] = 0
            depthwise = getattr(layer, "groups", 1) > 1
            if edit.in_keep is not None and edit.in_channels is not None and not depthwise:
                gone = sorted(set(range(edit.in_channels)) - set(edit.in_keep))
                layer.weight[:, gone] = 0
    return module
