"""``slimkit.low_rank``: choose each layer's rank (energy, ratio or fixed), factorise only
where it lowers the MACs, check the output against the original and the ONNX export against
torch, and report parameters, MACs, ranks and energy before and after."""

from __future__ import annotations

import copy
import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.data import Dataset, synthetic
from slimkit.errors import InputError
from slimkit.lowrank.config import DEFAULT_LAYERS, ConvMethod, LowRankConfig, RankRule
from slimkit.lowrank.factorize import (
    FACTORIZERS,
    Geometry,
    Spectrum,
    build,
    energy_rank,
    weight_of,
)
from slimkit.lowrank.plan import make_plan
from slimkit.model import Model, Task
from slimkit.selector import Layer, Selector

log = logging.getLogger(__name__)


@dataclass
class LowRankResult:
    """The factorised model (a copy; the input is unchanged), its plan and the report."""

    model: Model
    plan: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.sections)

    def save(self, folder: str | Path) -> Path:
        """Write plan + safetensors weights into ``folder``; returns the folder."""
        from slimkit.lowrank.save import save_lowrank

        return save_lowrank(self.model, folder)


def low_rank(model: Model, config: LowRankConfig | None = None,
             data: Dataset | None = None) -> LowRankResult:
    """Factorise the Linear and Conv2d layers of ``model`` into pairs (or triples) of smaller
    layers where that lowers the MACs.

    Args:
        model: a torch model; it is not modified.
        config: the rank rule, conv method, layer selection and verification.
        data: examples for the fidelity check (synthetic inputs by default).

    Raises:
        InputError: a fixed rank is larger than a selected layer allows.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> r = low_rank(tiny_model("mlp"), LowRankConfig(rule="rank", rank=2, verify=False))
        >>> [(x["name"], x["ranks"]) for x in r.sections["layers"]]
        [('fc1', [2]), ('fc2', [2])]
    """
    config = config or LowRankConfig()
    module = copy.deepcopy(model.require_module("low-rank factorisation"))
    candidates, skipped = _candidates(module, config)
    geometry = _geometry(model, module, [name for name, _ in candidates])
    layers: list[dict[str, Any]] = []
    used_rules: set[str] = set()
    edits = []
    for name, layer in candidates:
        kind = _kind(layer, config)
        spectra = FACTORIZERS.get(kind).decompose(layer)
        ranks = _ranks(name, layer, kind, spectra, config, used_rules)
        row, why = _decide(name, layer, kind, ranks, geometry[name], config)
        row["max_ranks"] = [len(s.values) for s in spectra]
        if why:
            log.info("low-rank: %s left alone: %s", name, why)
            skipped.append({"layer": name, "why": why})
            continue
        new, row["energy"] = build(kind, layer, ranks, spectra)
        row["params_after"] = sum(p.numel() for p in new.parameters())
        edits.append((name, new))
        layers.append(row)
    _check_rules_used(config, used_rules)
    from slimkit.graph.layers import replace_module

    for name, new in edits:
        replace_module(module, name, new)
    plan = make_plan(model, config.to_dict(), layers)
    result = replace(model, module=module.eval(), name=f"{model.name}-lowrank",
                     meta={**model.meta, "lowrank_plan": plan})
    return LowRankResult(result, plan, _report(model, result, config, layers, skipped, data))


def _candidates(module: nn.Module, config: LowRankConfig,
                ) -> tuple[list[tuple[str, nn.Module]], list[dict[str, str]]]:
    named = [(n, m) for n, m in module.named_modules() if n]
    infos = [Layer(n, type(m).__name__, n) for n, m in named]
    chosen = {layer.name for layer in Selector(config.layers).select(
        infos, validate=config.layers != DEFAULT_LAYERS)}
    excluded = {layer.name for layer in Selector(config.exclude).select(infos)}
    candidates: list[tuple[str, nn.Module]] = []
    skipped: list[dict[str, str]] = []
    for name, layer in named:
        if name not in chosen:
            continue
        if name in excluded:
            skipped.append({"layer": name, "why": "excluded by a rule"})
        elif not isinstance(layer, (nn.Linear, nn.Conv2d)):
            if any(p.ndim > 1 for p in layer.parameters(recurse=False)):
                skipped.append({"layer": name, "why": f"{type(layer).__name__} is not "
                                "factorised (Linear and Conv2d are)"})
        elif isinstance(layer, nn.Conv2d) and layer.groups != 1:
            skipped.append({"layer": name, "why": f"grouped convolution (groups={layer.groups})"
                            ": already cheap per channel, not factorised"})
        else:
            candidates.append((name, layer))
    return candidates, skipped


def _geometry(model: Model, module: nn.Module, names: list[str]) -> dict[str, Geometry]:
    """Input and output positions of each layer for one example (text: 128 tokens)."""
    seen: dict[str, Geometry] = {}
    modules = dict(module.named_modules())

    def hook(name: str) -> Any:
        def record(layer: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            x = inputs[0]
            if isinstance(layer, nn.Conv2d):
                seen[name] = Geometry(int(x.shape[-1] * x.shape[-2]),
                                      int(output.shape[-1] * output.shape[-2]))
            else:
                positions = int(x.numel() // x.shape[-1])
                seen[name] = Geometry(positions, positions)
        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    batch = synthetic(model.inputs, 1, seed=0).first_batch(1)
    mode = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(*model.torch_args(batch))
    finally:
        module.train(mode)
        for handle in handles:
            handle.remove()
    return {n: seen.get(n, Geometry(1, 1)) for n in names}


def _kind(layer: nn.Module, config: LowRankConfig) -> str:
    if isinstance(layer, nn.Linear):
        return "linear"
    kernel = weight_of(layer).shape[2:]
    if config.conv_method == ConvMethod.TUCKER2 and tuple(kernel) != (1, 1):
        return "conv-tucker2"
    return "conv-channel"


def _ranks(name: str, layer: nn.Module, kind: str, spectra: list[Spectrum],
           config: LowRankConfig, used_rules: set[str]) -> tuple[int, ...]:
    limits = [len(s.values) for s in spectra]
    fixed = _fixed_rank(name, layer, config, used_rules)
    if fixed is None and config.rule == RankRule.ENERGY:
        return tuple(energy_rank(s.values, config.energy) for s in spectra)
    if fixed is None and config.rule == RankRule.RATIO:
        return tuple(max(1, round(config.ratio * n)) for n in limits)
    rank = fixed if fixed is not None else int(config.rank or 0)
    if rank > min(limits):
        shape = tuple(weight_of(layer).shape)
        raise InputError(f"layer '{name}' ({type(layer).__name__}, weight {shape}) allows rank "
                         f"at most {min(limits)} for {kind}; rank {rank} was asked: lower it, "
                         "give this layer its own rank (layer_ranks) or exclude it")
    return tuple(rank for _ in limits)


def _fixed_rank(name: str, layer: nn.Module, config: LowRankConfig,
                used_rules: set[str]) -> int | None:
    info = Layer(name, type(layer).__name__, name)
    for rule, rank in config.layer_ranks:
        if Selector((rule,)).select([info], validate=False):
            used_rules.add(rule)
            return rank
    return None


def _check_rules_used(config: LowRankConfig, used: set[str]) -> None:
    unused = [rule for rule, _ in config.layer_ranks if rule not in used]
    if unused:
        raise InputError(f"layer rank rules {unused} match no factorised layer; check the "
                         "names (qualified module names) or the layer selection")


def _decide(name: str, layer: nn.Module, kind: str, ranks: tuple[int, ...],
            geometry: Geometry, config: LowRankConfig) -> tuple[dict[str, Any], str]:
    handler = FACTORIZERS.get(kind)
    before, after = handler.macs(layer, None, geometry), handler.macs(layer, ranks, geometry)
    row = {"name": name, "type": type(layer).__name__, "kind": kind, "ranks": list(ranks),
           "macs_before": before, "macs_after": after,
           "params_before": sum(p.numel() for p in layer.parameters())}
    if after >= before * (1.0 - config.min_saving):
        margin = f" by more than {config.min_saving}" if config.min_saving else ""
        return row, (f"rank {list(ranks)} gives {after:,} MACs, not below {before:,} of the "
                     f"layer{margin}")
    return row, ""


def _report(model: Model, result: Model, config: LowRankConfig, layers: list[dict[str, Any]],
            skipped: list[dict[str, str]], data: Dataset | None) -> dict[str, Any]:
    from slimkit.analyse.stats import size_comparison

    sample = data.take(64) if data is not None else synthetic(model.inputs, 8, seed=1,
                                                              dynamic=32)
    report: dict[str, Any] = {"config": config.to_dict(), "size": size_comparison(model, result),
                              "layers": layers, "skipped": skipped,
                              "fidelity": fidelity(model, result, sample)}
    if config.verify and layers:
        from slimkit.export.onnx import export_onnx

        with tempfile.TemporaryDirectory(prefix="slimkit-lowrank-") as tmp:
            exported = export_onnx(result, Path(tmp) / "lowrank.onnx", sample=sample)
        report["onnx_verified"] = {"max_abs_diff": exported.max_abs_diff,
                                   "atol": exported.atol, "rtol": exported.rtol}
    return report


def fidelity(reference: Model, candidate: Model, sample: Dataset) -> dict[str, float]:
    """How close ``candidate``'s first output is to ``reference``'s on ``sample`` (torch):
    SQNR, max abs error, top-1 agreement; cosine and neighbours for embedding models."""
    from slimkit.evaluate.metrics import embedding_fidelity, output_fidelity

    outs = []
    batch = sample.first_batch(len(sample))
    for m in (reference, candidate):
        module = m.require_module("fidelity")
        mode = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(*m.torch_args(batch))
        finally:
            module.train(mode)
        outs.append(np.asarray((out[0] if isinstance(out, (tuple, list)) else out).numpy()))
    result = output_fidelity(outs[0], outs[1])
    if reference.task == Task.EMBEDDING:
        result.update(embedding_fidelity(outs[0], outs[1]))
    return {k: round(float(v), 6) for k, v in result.items()}
