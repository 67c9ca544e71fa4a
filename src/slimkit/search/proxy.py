"""Cheap proxies of one search point, with no fine-tuning: the pruned model's MACs and weight
bytes (int8 layers at one byte a weight plus a float scale per channel), and its metric after
re-estimating BatchNorm statistics (adaptive BN), with int8 simulated by rounding the weights per
channel (weight error only: activation rounding is left to the finalists' real measurement)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from slimkit.data import Dataset
from slimkit.model import Model
from slimkit.recipe.metric import Scorer
from slimkit.search.space import SearchSpace


@dataclass
class TrialContext:
    """Everything one trial needs (sent once to each Ray worker)."""

    model: Model
    scorer: Scorer
    space: SearchSpace
    seed: int
    threads: int = 1
    int8_speed: float = 1.0
    base_macs: float = 1.0  # the original's, from layer_costs
    base_bytes: float = 1.0
    train: Dataset | None = None  # adaptive BN batches come from it
    bn_batches: int = 0


def candidate(ctx: TrialContext, params: dict[str, Any]) -> Model:
    """The pruned (not fine-tuned) model of ``params``, its BatchNorm statistics re-estimated
    when the context asks for it."""
    from slimkit.prune import PruneConfig, prune
    from slimkit.train.batchnorm import recalibrate_batchnorm

    rules = ctx.space.prune_rules(params)
    if not rules:
        return ctx.model
    config = PruneConfig(ratio=0.0, layer_ratios=rules, importance="l2", seed=ctx.seed)
    pruned = prune(ctx.model, config).model
    if ctx.bn_batches and ctx.train is not None:
        pruned = recalibrate_batchnorm(pruned, ctx.train, ctx.bn_batches, seed=ctx.seed)
    return pruned


def evaluate_point(ctx: TrialContext, params: dict[str, Any]) -> dict[str, float]:
    """MACs and bytes (as ratios of the original) and the metric drop of one point.

    Deterministic: the same point gives the same numbers in any process.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(ctx.threads)
    try:
        pruned = candidate(ctx, params)
        int8 = _int8_layers(ctx.space, params)
        costs = layer_costs(pruned, int8)
        macs = costs["macs"] - costs["int8_macs"] * (1 - 1 / ctx.int8_speed)
        scored = fake_quantize(pruned, int8) if int8 else pruned
        metric = ctx.scorer.score(scored)
    finally:
        torch.set_num_threads(threads)
    return {"macs": round(macs / max(ctx.base_macs, 1), 6),
            "bytes": round(costs["bytes"] / max(ctx.base_bytes, 1), 6),
            "metric": round(metric, 6), "drop": round(ctx.scorer.baseline - metric, 6)}


def _int8_layers(space: SearchSpace, params: dict[str, Any]) -> set[str]:
    if not params.get("int8"):
        return set()
    return set(space.quant_layers) - set(space.float_layers(params))


def layer_costs(model: Model, int8: set[str]) -> dict[str, float]:
    """Total MACs (batch 1), MACs of int8 layers, and weight bytes."""
    from slimkit.analyse.stats import model_stats

    stats = model_stats(model)
    module = model.require_module("costs")
    int8_macs = sum(layer.macs for layer in stats.layers if layer.name in int8)
    total_bytes = 0
    for name, sub in module.named_modules():
        own = list(sub.named_parameters(recurse=False))
        for pname, p in own:
            if name in int8 and pname == "weight":
                total_bytes += p.numel() + 4 * p.shape[0]
            else:
                total_bytes += 4 * p.numel()
    return {"macs": float(stats.macs), "int8_macs": float(int8_macs), "bytes": total_bytes}


def fake_quantize(model: Model, layers: set[str]) -> Model:
    """A copy of ``model`` whose ``layers`` have weights rounded to symmetric int8 per output
    channel (the grid ``quantize`` uses)."""
    import torch

    module = copy.deepcopy(model.require_module("fake quantization"))
    with torch.no_grad():
        for name, sub in module.named_modules():
            weight = getattr(sub, "weight", None)
            if name in layers and isinstance(weight, torch.Tensor):
                flat = weight.reshape(weight.shape[0], -1)
                scale = flat.abs().amax(dim=1).clamp(min=1e-12) / 127.0
                q = torch.clamp(torch.round(flat / scale[:, None]), -127, 127)
                weight.copy_((q * scale[:, None]).reshape(weight.shape))
    return replace(model, module=module)
