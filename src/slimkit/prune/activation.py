"""Importance ``activation``: the expected squared contribution of each weight to its layer's
output, ``w_ij**2 * E[x_j**2]``, with ``E[x_j**2]`` the mean square of input feature (Linear:
last axis) or input channel (convolution) ``j`` over a few batches of data.

Summed over a column of a layer that writes into the residual stream (an attention output
projection, an FFN down projection) it is the energy that unit adds to the stream: on
all-MiniLM-L6-v2 this keeps the sentence embeddings much closer to the original's than weight
magnitude or first-order Taylor (see benchmarks/bench_prune_minilm.py). The same criterion with
``|w|`` and the root mean square is Wanda's (Sun et al., 2023); the squared form adds up
exactly over a column.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

from slimkit.errors import InputError
from slimkit.model import eval_mode
from slimkit.progress import progress
from slimkit.prune.importance import IMPORTANCE, ImportanceContext


@IMPORTANCE.register("activation")
def activation(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """``w**2 * E[x**2]`` of every scored Linear/convolution weight; other parameters (norm
    scales) get ``w**2``. Needs data; the model only runs forward (no gradients).

    Example:
        >>> from slimkit.data import synthetic
        >>> from slimkit.testing import tiny_model
        >>> m = tiny_model("mlp")
        >>> ctx = ImportanceContext(m, ("fc1.weight",), synthetic(m.inputs, 8))
        >>> activation(ctx)["fc1.weight"].shape
        torch.Size([16, 8])
    """
    if ctx.data is None or len(ctx.data) == 0:
        raise InputError("importance 'activation' needs data (a Dataset, or --data on the "
                         "command line); use l1, l2 or random without data")
    module = ctx.model.require_module("importance")
    owners = {name: name.rpartition(".")[0] for name in ctx.parameters}
    squares: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    for owner in dict.fromkeys(owners.values()):
        layer = module.get_submodule(owner)
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            hooks.append(layer.register_forward_pre_hook(_recorder(owner, squares, counts)))
    batches = itertools.islice(ctx.data.batches(ctx.batch_size), ctx.batches)
    count = min(ctx.batches, math.ceil(len(ctx.data) / ctx.batch_size))
    try:
        with eval_mode(module), torch.no_grad():
            for inputs, _ in progress(batches, "activation importance", count):
                module(*ctx.model.torch_args(inputs))
    finally:
        for hook in hooks:
            hook.remove()
    params = dict(module.named_parameters())
    return {name: _weighted(params[name].detach(), squares.get(owners[name]),
                            counts.get(owners[name], 0)) for name in ctx.parameters}


def _recorder(owner: str, squares: dict[str, torch.Tensor],
              counts: dict[str, int]) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
    def hook(layer: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach().double()
        if isinstance(layer, nn.Linear):
            flat = x.reshape(-1, x.shape[-1])
        else:  # (batch, channels, ...) -> (positions, channels)
            flat = x.transpose(0, 1).reshape(x.shape[1], -1).T
        squares[owner] = squares.get(owner, 0) + flat.pow(2).sum(0)
        counts[owner] = counts.get(owner, 0) + flat.shape[0]

    return hook


def _weighted(weight: torch.Tensor, squares: torch.Tensor | None, count: int) -> torch.Tensor:
    if squares is None or count == 0 or weight.dim() < 2:
        return weight.pow(2)
    mean = (squares / count).to(weight.dtype)
    if weight.shape[1] != mean.numel():  # grouped convolution: one weight column per group
        return weight.pow(2)
    return weight.pow(2) * mean.reshape(1, -1, *([1] * (weight.dim() - 2)))
