"""Unstructured and N:M pruning of a decoder's Linear layers, one decoder layer at a time.

As in the Wanda and SparseGPT papers, calibration runs through the decoder layer by layer:
the statistics of a layer's Linear inputs are gathered on what the already pruned layers before
it produce, the layer is pruned, and its pruned outputs feed the next layer. Embeddings and the
LM head stay dense (they are the tied vocabulary matrix in small models; pruning them is out of
scope of both papers). Weights are zeroed in place; shapes do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimkit.llm.prune.calibration import Calibration, decoder_layers, layer_stream
from slimkit.llm.prune.config import LLMPruneConfig, LLMPruneMethod
from slimkit.llm.prune.sparse import (
    check_nm,
    magnitude_mask,
    sparsegpt_prune,
    wanda_mask,
)
from slimkit.progress import progress


def layer_linears(hf: Any) -> list[list[tuple[str, nn.Linear]]]:
    """The Linear layers of every decoder layer, with their qualified names in ``hf``."""
    layers = decoder_layers(hf)
    prefix = next(n for n, m in hf.named_modules() if m is layers)
    return [[(f"{prefix}.{i}.{n}", m) for n, m in layer.named_modules()
             if isinstance(m, nn.Linear)] for i, layer in enumerate(layers)]


def check_pattern(hf: Any, config: LLMPruneConfig) -> None:
    """Refuse an N:M pattern up front when any layer's input dimension does not fit it."""
    if config.nm is not None:
        for rows in layer_linears(hf):
            for name, linear in rows:
                check_nm(name, linear.in_features, config.nm)


def prune_sparse(hf: Any, config: LLMPruneConfig,
                 calibration: Calibration | None) -> list[dict[str, Any]]:
    """Zero weights of every decoder Linear in place; one row per layer for the report."""
    check_pattern(hf, config)
    rows = layer_linears(hf)
    if config.method == LLMPruneMethod.MAGNITUDE or calibration is None:
        return [_prune(name, lin, None, config) for group in rows for name, lin in group]
    stream = layer_stream(hf, calibration.ids)
    report = []
    layers = decoder_layers(hf)
    for layer, group in progress(list(zip(layers, rows, strict=True)),
                                 f"{config.method.value} pruning", len(rows)):
        stats = _gather(layer, group, stream.run, config.method)
        report += [_prune(name, lin, stats[name], config) for name, lin in group]
        stream.advance(layer)
    return report


def _gather(layer: nn.Module, group: list[tuple[str, nn.Linear]],
            run: Callable[[nn.Module], list[torch.Tensor]],
            method: LLMPruneMethod) -> dict[str, torch.Tensor]:
    """Per Linear: the sum of squares of each input feature (Wanda) or ``X^T X`` (SparseGPT)
    over the calibration tokens."""
    stats: dict[str, torch.Tensor] = {}

    def recorder(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            value = x.T @ x if method == LLMPruneMethod.SPARSEGPT else x.pow(2).sum(0)
            stats[name] = stats[name] + value if name in stats else value

        return hook

    handles = [lin.register_forward_pre_hook(recorder(name)) for name, lin in group]
    try:
        run(layer)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _prune(name: str, linear: nn.Linear, stats: torch.Tensor | None,
           config: LLMPruneConfig) -> dict[str, Any]:
    weight = linear.weight.data
    if stats is None:
        mask = magnitude_mask(weight, config.sparsity, config.nm)
        weight[mask] = 0.0
    elif config.method == LLMPruneMethod.WANDA:
        mask = wanda_mask(weight, stats, config.sparsity, config.nm)
        weight[mask] = 0.0
    else:
        new, mask = sparsegpt_prune(weight, stats, config.sparsity, config.nm, config.damp,
                                    config.block)
        weight.copy_(new)
    zeros = int((weight == 0).sum())
    return {"layer": name, "weights": weight.numel(), "zeros": zeros,
            "sparsity": round(zeros / weight.numel(), 4)}
