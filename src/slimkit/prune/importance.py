"""Importance criteria (``IMPORTANCE``, by name) and group importance of coupled channels.

A criterion gives every scored parameter an element-wise *saliency* of the same shape (l1:
``|w|``, l2: ``w**2``, taylor: ``|w * dL/dw|`` summed over batches, saliency: Optimal Brain
Damage's ``0.5 * w**2 * sum(g**2)``, slimming: ``|gamma|`` of norm layers after sparse training,
group_lasso: ``w**2`` after sparse training with a group-lasso penalty, random: uniform noise).
Structured pruning sums a layer's saliency over all but one axis to score each of its channels,
then combines the layers of a coupled channel (sum or mean); unstructured pruning ranks the
elements directly. Criteria only read the model: data-driven ones work on a copy.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.graph.channels import ChannelGraph, ChannelGroup, LayerKind
from slimkit.model import Model, Task, first_tensor
from slimkit.progress import progress
from slimkit.registry import Registry


@dataclass(frozen=True)
class ImportanceContext:
    """What a criterion may read: the model, the parameters to score, data and settings."""

    model: Model
    parameters: tuple[str, ...]
    data: Dataset | None = None
    seed: int = 0
    batches: int = 4
    batch_size: int = 32


Criterion = Callable[[ImportanceContext], dict[str, torch.Tensor]]
IMPORTANCE: Registry[Criterion] = Registry("importance criterion")


def _weights(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    params = dict(ctx.model.require_module("importance").named_parameters())
    return {name: params[name].detach() for name in ctx.parameters}


@IMPORTANCE.register("l1")
def l1(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """Magnitude: ``|w|``."""
    return {name: w.abs() for name, w in _weights(ctx).items()}


@IMPORTANCE.register("l2")
def l2(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """Squared magnitude: ``w**2`` (a channel's score is its squared L2 norm)."""
    return {name: w.pow(2) for name, w in _weights(ctx).items()}


@IMPORTANCE.register("random")
def random(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """Uniform noise from ``seed``: the baseline every criterion should beat."""
    generator = torch.Generator().manual_seed(ctx.seed)
    return {name: torch.rand(w.shape, generator=generator)
            for name, w in _weights(ctx).items()}


@IMPORTANCE.register("taylor")
def taylor(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """First-order Taylor: ``|w * dL/dw|`` accumulated over up to ``batches`` batches.

    The loss is cross-entropy with the data's labels; without labels, a classifier uses its
    own predictions as labels, and other models the energy ``0.5 * mean(f(x)**2)`` of their
    output (the MSE to the original outputs has a zero gradient at the unpruned weights, so
    its first-order score would be zero everywhere).
    """
    return _accumulate(ctx, "taylor", lambda w, g: (w * g).abs())


@IMPORTANCE.register("saliency")
def saliency(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """Gradient saliency of Optimal Brain Damage: ``0.5 * w**2 * sum(g**2)``, the diagonal
    of the Hessian approximated by the empirical Fisher (squared gradients summed over up to
    ``batches`` batches; same loss as taylor). Unlike taylor, gradients of opposite sign in
    different batches do not cancel."""
    return _accumulate(ctx, "saliency", lambda w, g: 0.5 * w.pow(2) * g.pow(2))


@IMPORTANCE.register("slimming")
def slimming(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """Network slimming: ``|gamma|`` of the norm layers after sparse training with an L1
    penalty on them (see ``regularise.py``); needs labelled data unless the model was
    sparse-trained already (``prune`` does that with the config's settings)."""
    from slimkit.prune.regularise import norm_scales

    module = _regularised(ctx, "slimming").require_module("importance")
    return norm_scales(module, ctx.parameters)


@IMPORTANCE.register("group_lasso")
def group_lasso(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """Group lasso: ``w**2`` (a channel's squared L2 norm) after sparse training with the
    sum of the channels' L2 norms as penalty; data as for slimming."""
    params = dict(_regularised(ctx, "group_lasso").require_module("importance")
                  .named_parameters())
    return {name: params[name].detach().pow(2) for name in ctx.parameters}


def _regularised(ctx: ImportanceContext, criterion: str) -> Model:
    from slimkit.prune.regularise import SparseTraining, is_sparse_trained, sparse_train

    if is_sparse_trained(ctx.model, criterion):
        return ctx.model
    return sparse_train(ctx.model, criterion, ctx.data,
                        SparseTraining(batch_size=ctx.batch_size, seed=ctx.seed))


REGULARISED = ("slimming", "group_lasso")  # criteria that train the model before scoring


def _accumulate(ctx: ImportanceContext, criterion: str,
                term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                ) -> dict[str, torch.Tensor]:
    """Sum ``term(w, dL/dw)`` over up to ``ctx.batches`` batches, on a copy of the model."""
    if ctx.data is None or len(ctx.data) == 0:
        raise InputError(f"importance '{criterion}' needs data (a Dataset, or --data on the "
                         "command line); use l1, l2 or random without data")
    module = copy.deepcopy(ctx.model.require_module("importance")).eval()
    params = dict(module.named_parameters())
    totals = {name: torch.zeros_like(params[name]) for name in ctx.parameters}
    batches = itertools.islice(ctx.data.batches(ctx.batch_size), ctx.batches)
    count = min(ctx.batches, math.ceil(len(ctx.data) / ctx.batch_size))
    with torch.enable_grad():
        for inputs, labels in progress(batches, f"{criterion} importance", count):
            module.zero_grad(set_to_none=True)
            output = first_tensor(module(*ctx.model.torch_args(inputs)))
            _loss(output, labels, ctx.model.task).backward()
            for name, total in totals.items():
                grad = params[name].grad
                if grad is not None:
                    total += term(params[name].detach(), grad)
    return totals


def taylor_loss_name(data: Dataset | None, task: Task) -> str:
    """Which loss the taylor criterion uses for this data and task (for the report)."""
    if data is not None and data.labels is not None:
        return "cross-entropy with the data's labels"
    if task == Task.CLASSIFICATION:
        return "cross-entropy with the model's own predictions"
    return "output energy 0.5 * mean(f(x)**2)"


def _loss(output: torch.Tensor, labels: object, task: Task) -> torch.Tensor:
    if labels is not None:
        target = torch.as_tensor(labels, dtype=torch.long)
        return F.cross_entropy(output, target)
    if task == Task.CLASSIFICATION:
        return F.cross_entropy(output, output.detach().argmax(dim=-1))
    return 0.5 * output.pow(2).mean()


# ---- group importance -----------------------------------------------------------------

def scored_parameters(graph: ChannelGraph, module: nn.Module) -> tuple[str, ...]:
    """The parameters whose saliency scores channels: weights of convolutions and Linear
    layers, and BatchNorm scales."""
    names = []
    for node in graph.layers.values():
        weight = getattr(module.get_submodule(node.name), "weight", None)
        if isinstance(weight, nn.Parameter):
            names.append(f"{node.name}.weight")
    return tuple(names)


def channel_scores(graph: ChannelGraph, saliency: dict[str, torch.Tensor],
                   reduce: str) -> dict[int, float]:
    """The importance of every channel class: its layers' scores, summed or averaged.

    A layer scores a class by summing the saliency of the weight slices that belong to it
    (an output row, an input column or, after flatten, a block of columns).
    """
    total: dict[int, float] = {}
    count: dict[int, int] = {}
    for node in graph.layers.values():
        weight = saliency.get(f"{node.name}.weight")
        if weight is None:
            continue
        axes = [(0, node.out_vars)]
        if node.kind in (LayerKind.CONV, LayerKind.LINEAR) and node.in_vars is not None:
            axes.append((1, node.in_vars))
        for axis, variables in axes:
            per_position = _per_position(weight, axis, len(variables))
            layer_scores: dict[int, float] = {}
            for cls, score in zip(graph.classes_of(variables), per_position.tolist(),
                                  strict=True):
                layer_scores[cls] = layer_scores.get(cls, 0.0) + score
            for cls, score in layer_scores.items():
                total[cls] = total.get(cls, 0.0) + score
                count[cls] = count.get(cls, 0) + 1
    if reduce == "mean":
        return {cls: score / count[cls] for cls, score in total.items()}
    return total


def _per_position(weight: torch.Tensor, axis: int, positions: int) -> torch.Tensor:
    """A weight's saliency summed per position of ``axis``; the input axis of a grouped
    convolution (``positions`` = groups x its columns) is scored per group, from the rows of
    that group only."""
    if axis == 1 and weight.shape[1] != positions:
        groups = positions // weight.shape[1]
        return weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1) \
            .sum(dim=(1, 3)).flatten()
    return weight.transpose(0, axis).reshape(weight.shape[axis], -1).sum(1)


def group_scores(group: ChannelGroup, scores: dict[int, float]) -> torch.Tensor:
    """The scores of a group's classes, in the group's order (0 for an unscored class)."""
    return torch.tensor([scores.get(cls, 0.0) for cls in group.classes], dtype=torch.float64)
