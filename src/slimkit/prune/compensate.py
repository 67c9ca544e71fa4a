"""Bias compensation after removing transformer units (heads, FFN neurons).

A removed unit's output is not zero on average: the layer that reads it (the attention output
projection, the FFN down projection) loses ``W[:, removed] @ E[x_removed]`` on every token. Adding
that mean back to the layer's bias keeps the first moment of its output (FLAP, An et al., 2024);
the mean is taken over real tokens of a few batches (padding excluded). The shifts are data in
the plan (``extra["bias_shift"]``), so ``apply_plan`` replays them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.graph.plan import LayerEdit
from slimkit.model import Model, eval_mode
from slimkit.progress import progress

MASK_INPUT = "attention_mask"  # (batch, tokens): 1 for real tokens


def input_means(model: Model, layers: tuple[str, ...], data: Dataset, batches: int,
                batch_size: int) -> dict[str, torch.Tensor]:
    """The mean input feature vector of each Linear in ``layers`` over ``data`` (tokens whose
    ``attention_mask`` is 0 are left out)."""
    module = model.require_module("bias compensation")
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    mask: list[torch.Tensor | None] = [None]
    hooks = [module.get_submodule(name).register_forward_pre_hook(
        _recorder(name, sums, counts, mask)) for name in layers]
    count = min(batches, math.ceil(len(data) / batch_size))
    try:
        with eval_mode(module), torch.no_grad():
            for inputs, _ in progress(itertools.islice(data.batches(batch_size), batches),
                                      "bias compensation", count):
                given = inputs.get(MASK_INPUT)
                mask[0] = torch.as_tensor(given).bool() if given is not None else None
                module(*model.torch_args(inputs))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: sums[name] / max(counts[name], 1) for name in sums}


def _recorder(name: str, sums: dict[str, torch.Tensor], counts: dict[str, int],
              mask: list[torch.Tensor | None]) -> Callable[[nn.Module, tuple[torch.Tensor, ...]],
                                                           None]:
    def hook(_layer: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach().double()
        real = mask[0]
        if real is not None and x.dim() == 3 and tuple(real.shape) == tuple(x.shape[:2]):
            flat = x[real]
        else:
            flat = x.reshape(-1, x.shape[-1])
        sums[name] = sums.get(name, 0) + flat.sum(0)
        counts[name] = counts.get(name, 0) + flat.shape[0]

    return hook


def bias_shifts(module: nn.Module, removed: dict[str, list[int]],
                means: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """``W[:, removed] @ mean[removed]`` for every layer with a bias (layers without one are
    left out: there is nothing to add the shift to).

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]))
        >>> bias_shifts(nn.Sequential(layer), {"0": [1, 2]}, {"0": torch.tensor([9.0, 1.0, 2.0])})
        {'0': [8.0, 1.0]}
    """
    shifts = {}
    for name, columns in removed.items():
        layer = module.get_submodule(name)
        if not isinstance(layer, nn.Linear) or layer.bias is None or not columns:
            continue
        index = torch.as_tensor(columns, dtype=torch.long)
        weight = layer.weight.detach().double()[:, index]
        shifts[name] = (weight @ means[name].double()[index]).tolist()
    return shifts


def removed_columns(edits: Iterable[LayerEdit], layers: Iterable[str]) -> dict[str, list[int]]:
    """The input columns each of ``layers`` loses under ``edits``."""
    wanted = set(layers)
    return {e.name: sorted(set(range(e.in_channels)) - set(e.in_keep)) for e in edits
            if e.name in wanted and e.in_keep is not None and e.in_channels is not None}


def compensation(model: Model, removed: dict[str, list[int]], data: Dataset | None,
                 batches: int, batch_size: int) -> dict[str, list[float]]:
    """The bias shifts that compensate the ``removed`` input columns of each layer."""
    if data is None or len(data) == 0:
        raise InputError("bias compensation needs data (a Dataset, or --data on the command "
                         "line) to measure the mean of the removed units")
    layers = tuple(name for name, columns in removed.items() if columns)
    means = input_means(model, layers, data, batches, batch_size)
    return bias_shifts(model.require_module("bias compensation"), removed, means)
