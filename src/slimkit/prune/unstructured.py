"""Unstructured pruning: single weights of Conv and Linear layers masked to zero with
``torch.nn.utils.prune`` (the masks survive fine-tuning), the cubic sparsity schedule of
Zhu & Gupta (2017), and ``finalize`` to bake the masks into plain weights.

Dense runtimes multiply every zero, so this makes no model faster: it makes files smaller
after compression, which the report measures.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.graph.masks import bake_masks, copy_masked, masked_layers, weights_bytes
from slimkit.graph.plan import PrunePlan
from slimkit.model import Model
from slimkit.prune.config import PruneConfig, PruneMode, Scope
from slimkit.prune.importance import IMPORTANCE, ImportanceContext
from slimkit.selector import Layer, Selector

log = logging.getLogger(__name__)
NO_SPEEDUP = ("unstructured sparsity gives no speed-up in dense runtimes (PyTorch, ONNX "
              "Runtime): every zero weight is still multiplied; it only shrinks the file "
              "after compression (see size). Use structured pruning for speed")


def prune_unstructured(model: Model, config: PruneConfig,
                       data: Dataset | None = None) -> tuple[Model, PrunePlan, dict[str, Any]]:
    """Mask the least important ``config.ratio`` of the weights (per layer or globally) in a
    copy of ``model``; returns the masked model, its plan and report sections."""
    module = model.require_module("unstructured pruning")
    names = [name for name, _ in masked_layers(module, config.exclude)]
    if not names:
        raise InputError(f"'{model.name}' has no Conv or Linear layer left to prune after the "
                         "exclusions")
    context = ImportanceContext(model, tuple(f"{n}.weight" for n in names), data, config.seed,
                                config.taylor_batches, config.batch_size)
    saliency = IMPORTANCE.get(config.importance)(context)
    masked = copy_masked(module)
    targets = {name: masked.get_submodule(name) for name in names}
    if config.scope == Scope.GLOBAL:
        torch_prune.global_unstructured(
            [(sub, "weight") for sub in targets.values()], torch_prune.L1Unstructured,
            importance_scores={(sub, "weight"): saliency[f"{n}.weight"]
                               for n, sub in targets.items()},
            amount=config.ratio)
    else:
        ratios = _layer_ratios(names, targets, config)
        for name, sub in targets.items():
            torch_prune.l1_unstructured(sub, "weight", amount=ratios[name],
                                        importance_scores=saliency[f"{name}.weight"])
    result = replace(model, module=masked, name=f"{model.name}-sparse",
                     meta={**model.meta, "pruned": PruneMode.UNSTRUCTURED.value})
    plan = PrunePlan(PruneMode.UNSTRUCTURED.value,
                     {"name": model.name, "source": model.source,
                      "inputs": [spec.to_dict() for spec in model.inputs]},
                     config.to_dict(), extra={"masked_layers": names})
    sections = _report(module, masked, targets)
    sections["skipped"] = [{"layer": name, "why": f"excluded by a rule of {list(config.exclude)}"}
                           for name, _ in masked_layers(module, ()) if name not in targets]
    for row in sections["skipped"]:
        log.info("unstructured pruning skips '%s': %s", row["layer"], row["why"])
    return result, plan, sections


def _layer_ratios(names: list[str], targets: dict[str, nn.Module],
                  config: PruneConfig) -> dict[str, float]:
    """``config.ratio``, or the ratio of the first ``layer_ratios`` rule matching the layer."""
    ratios = dict.fromkeys(names, config.ratio)
    layers = [Layer(name, type(sub).__name__, name) for name, sub in targets.items()]
    for rule, ratio in reversed(config.layer_ratios):  # earlier rules overwrite later ones
        for layer in Selector((rule,)).select(layers):
            ratios[layer.name] = ratio
    return ratios


def _report(original: nn.Module, masked: nn.Module,
            targets: dict[str, nn.Module]) -> dict[str, Any]:
    rows, zeros, total = [], 0, 0
    for name, sub in targets.items():
        weight = sub.weight
        if not isinstance(weight, torch.Tensor):
            continue
        layer_zeros = int((weight == 0).sum())
        zeros, total = zeros + layer_zeros, total + weight.numel()
        rows.append({"layer": name, "weights": weight.numel(),
                     "sparsity": round(layer_zeros / weight.numel(), 4)})
    baked = bake_masks(copy_masked(masked))
    return {"sparsity": {"overall": round(zeros / max(total, 1), 4), "layers": rows},
            "size": _sizes(original, baked, set(targets)), "speed": NO_SPEEDUP}


def _sizes(original: nn.Module, baked: nn.Module, masked: set[str]) -> dict[str, int]:
    from slimkit.analyse.stats import compressed_size

    before, after = weights_bytes(original), weights_bytes(baked)
    bitmask = 0
    for name, tensor in baked.state_dict().items():
        if name.rpartition(".")[0] in masked and name.endswith(".weight"):
            nonzero = int(torch.count_nonzero(tensor))
            bitmask += math.ceil(tensor.numel() / 8) + nonzero * tensor.element_size()
        else:
            bitmask += tensor.numel() * tensor.element_size()
    return {"safetensors_bytes": len(after), "compressed_bytes_before": compressed_size(before),
            "compressed_bytes_after": compressed_size(after), "bitmask_bytes": bitmask}


