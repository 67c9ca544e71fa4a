"""The torch side of weight-only quantization: a working copy of the model whose linears are
quantized one decoder layer at a time (calibrated on activations that already carry the earlier
layers' error) and then hold their dequantized values, so the copy *is* the fake-quantized
reference the exported graph is checked against."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch

from slimkit.llm.wquant.awq import Grid, fold_scale, producer_of, search_scale
from slimkit.llm.wquant.calibrate import (
    GroupStats,
    decoder_layers,
    first_layer_inputs,
    group_stats,
    input_groups,
    layer_walk,
    linears,
)
from slimkit.llm.wquant.config import Method, WeightQuantConfig
from slimkit.llm.wquant.gptq import output_error
from slimkit.llm.wquant.grid import QuantizedWeight, check_finite, split, sqnr_db
from slimkit.llm.wquant.methods import QUANTIZERS, Job
from slimkit.progress import progress

log = logging.getLogger(__name__)


@dataclass
class UnitReport:
    """One decision unit: linears sharing an input (one MatMul in the exported graph)."""

    names: list[str]
    bits: int
    block: int
    note: str
    parameters: int
    sqnr_db: float
    output_error: float | None = None
    padded: bool = False
    awq_error_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


def working_copy(hf: Any) -> Any:
    """A deep copy of ``hf`` with its LM head untied from the embedding (each gets its own
    precision and quantization)."""
    work = copy.deepcopy(hf)
    head = work.get_output_embeddings()
    if head is not None and head.weight is work.get_input_embeddings().weight:
        head.weight = torch.nn.Parameter(head.weight.detach().clone())
    work.config.tie_word_embeddings = False
    return work.eval()


def grid_for(config: WeightQuantConfig, bits: int) -> Grid:
    return Grid(bits, config.block_size, config.is_symmetric)


def probe_groups(work: Any) -> list[list[list[str]]]:
    """The input groups of every decoder layer, from one short forward."""
    hidden, kwargs = first_layer_inputs(work, torch.arange(8)[None] % 7 + 3)
    return [input_groups(layer, hidden[0], kwargs) for layer in decoder_layers(work)]


def stacked(layer: Any, names: list[str]) -> torch.Tensor:
    modules = linears(layer)
    return torch.cat([modules[n].weight.detach().float() for n in names])


@torch.no_grad()
def quantize_group(layer: Any, names: list[str], job: Job, method: str,
                   prefix: str) -> tuple[dict[str, QuantizedWeight], UnitReport]:
    """Quantize the group ``names`` of ``layer`` (their stacked weight); the linears then hold
    the dequantized values."""
    modules = linears(layer)
    w = stacked(layer, names)
    q, note = QUANTIZERS.get(method)(w, job)
    check_finite(q, job.name)
    error = None if job.stats is None else output_error(w, q, job.stats.hessian)
    parts = split(q, [modules[n].out_features for n in names])
    for name, part in zip(names, parts, strict=True):
        modules[name].weight.copy_(part.dequantize())
    report = UnitReport([f"{prefix}{n}" for n in names], q.bits, q.block, note, w.numel(),
                        round(sqnr_db(w, q), 2), error, bool(w.shape[1] % q.block))
    return {f"{prefix}{n}": p for n, p in zip(names, parts, strict=True)}, report


def apply_awq(layer: Any, groups: list[list[str]], stats: dict[str, GroupStats],
              grids: dict[str, Grid], points: int) -> dict[str, float]:
    """Search and fold each group's AWQ scale; the statistics are rescaled to match (the
    group's inputs become ``x / s``). Returns each group's searched/plain error ratio."""
    ratios = {}
    for names in groups:
        producer, tie = producer_of(layer, names)
        entry = stats[names[0]]
        s, error, plain = search_scale(stacked(layer, names), entry, grids[names[0]], points, tie)
        fold_scale(layer, names, producer, s, tie)
        inverse = (1.0 / s).double()
        entry.hessian *= inverse[:, None] * inverse[None, :]
        entry.abs_sum *= inverse
        entry.samples = [x / s for x in entry.samples]
        ratios[names[0]] = error / plain if plain > 0 else 1.0
    return ratios


def quantize_decoder(work: Any, windows: torch.Tensor | None, config: WeightQuantConfig,
                     eight_bit: set[str]) -> tuple[dict[str, QuantizedWeight], list[UnitReport]]:
    """Quantize every decoder layer's linears of ``work`` in place (fake-quantized values);
    groups whose first qualified name is in ``eight_bit`` get 8 bits."""
    groups = probe_groups(work)
    quantized: dict[str, QuantizedWeight] = {}
    reports: list[UnitReport] = []
    layers = decoder_layers(work)
    walk = layer_walk(work, windows) if windows is not None else \
        ((i, layer, None, None) for i, layer in enumerate(layers))
    for index, layer, hidden, kwargs in progress(walk, "quantizing layers", total=len(layers)):
        prefix = f"model.layers.{index}."
        grids = {g[0]: grid_for(config, 8 if f"{prefix}{g[0]}" in eight_bit else config.bits)
                 for g in groups[index]}
        stats = None if hidden is None or kwargs is None else group_stats(
            layer, groups[index], hidden, kwargs, config.advanced.awq_tokens, config.seed)
        ratios = apply_awq(layer, groups[index], stats, grids, config.advanced.awq_grid) \
            if config.method == Method.AWQ and stats is not None else {}
        for names in groups[index]:
            job = Job(f"{prefix}{names[0]}", grids[names[0]],
                      None if stats is None else stats[names[0]], config.advanced)
            parts, report = quantize_group(layer, names, job, config.method.value, prefix)
            report.awq_error_ratio = ratios.get(names[0])
            quantized.update(parts)
            reports.append(report)
    return quantized, reports


@torch.no_grad()
def sensitivity(work: Any, windows: torch.Tensor, config: WeightQuantConfig) -> dict[str, dict]:
    """Each group's relative output error at the config's 4-bit grid (round to nearest), on
    calibration activations of the float model: the measure mixed precision ranks layers by."""
    out: dict[str, dict] = {}
    groups = probe_groups(work)
    grid = grid_for(config, 4)
    for index, layer, hidden, kwargs in layer_walk(work, windows):
        stats = group_stats(layer, groups[index], hidden, kwargs, 1, config.seed)
        for names in groups[index]:
            w = stacked(layer, names)
            q = QUANTIZERS.get("rtn")(w, Job(names[0], grid, None, config.advanced))[0]
            out[f"model.layers.{index}.{names[0]}"] = {
                "error": output_error(w, q, stats[names[0]].hessian), "parameters": w.numel()}
    return out


def pick_eight_bit(errors: dict[str, dict], fraction: float) -> set[str]:
    """The groups with the largest measured 4-bit error, most sensitive first, until they hold
    ``fraction`` of the parameters.

    Example:
        >>> e = {"a": {"error": 0.1, "parameters": 10}, "b": {"error": 0.3, "parameters": 10}}
        >>> sorted(pick_eight_bit(e, 0.5))
        ['b']
    """
    total = sum(e["parameters"] for e in errors.values())
    chosen: set[str] = set()
    held = 0
    for name, entry in sorted(errors.items(), key=lambda kv: -kv[1]["error"]):
        if held >= fraction * total:
            break
        chosen.add(name)
        held += entry["parameters"]
    return chosen
