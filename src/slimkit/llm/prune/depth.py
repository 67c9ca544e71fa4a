"""Depth pruning: remove whole decoder layers chosen on calibration text.

A layer whose output hidden states point almost where its inputs did changes little of what
the rest of the network sees. Two criteria, both from one layer-by-layer pass (``calibration``):

- ``block-influence`` (ShortGPT, Men et al., 2024): ``1 - cos(x_l, x_{l+1})`` of every layer,
  averaged over the calibration tokens; the ``k`` least influential layers go (anywhere).
- ``angular`` (Gromov et al., 2024): ``arccos(cos(x_l, x_{l+k})) / pi`` for every run of ``k``
  consecutive layers; the run with the smallest distance goes.

Removal keeps the model an ordinary Hugging Face model: the layer list shrinks, every attention
gets its new ``layer_idx`` (the KV cache's slot), and the config's ``num_hidden_layers`` (and
``layer_types`` where it has them) follow.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.errors import InputError
from slimkit.llm.prune.calibration import Calibration, decoder_layers, layer_stream
from slimkit.llm.prune.config import DepthCriterion, LLMPruneConfig
from slimkit.progress import progress


def layers_to_drop(count: int, ratio: float) -> int:
    """Layers removed for ``ratio`` (nearest whole layer); refuses to remove them all.

    Example:
        >>> layers_to_drop(30, 0.25), layers_to_drop(4, 0.5)
        (8, 2)
    """
    drop = math.floor(count * ratio + 0.5)
    if drop >= count:
        raise InputError(f"ratio {ratio} would remove all {count} decoder layers; use a "
                         "smaller ratio")
    return drop


def mean_angle(a: list[torch.Tensor], b: list[torch.Tensor], angular: bool) -> float:
    """Mean over tokens of ``1 - cos`` (or ``arccos(cos) / pi``) between paired states.

    Example:
        >>> x = [torch.tensor([[[1.0, 0.0]]])]
        >>> mean_angle(x, [torch.tensor([[[0.0, 1.0]]])], True)
        0.5
    """
    total, count = 0.0, 0
    for x, y in zip(a, b, strict=True):
        cos = F.cosine_similarity(x.double(), y.double(), dim=-1).clamp(-1.0, 1.0)
        value = torch.arccos(cos) / math.pi if angular else 1.0 - cos
        total, count = total + float(value.sum()), count + cos.numel()
    return total / max(count, 1)


def span_distances(hf: Any, calibration: Calibration, span: int,
                   angular: bool) -> list[float]:
    """For every start ``l``: the distance between the inputs of layer ``l`` and of layer
    ``l + span`` (the last layer's output counts as the input of layer ``L``)."""
    layers = decoder_layers(hf)
    stream = layer_stream(hf, calibration.ids)
    history: deque[list[torch.Tensor]] = deque([stream.hidden], maxlen=span + 1)
    distances = []
    for layer in progress(list(layers), "layer distances", len(layers)):
        stream.advance(layer)
        history.append(stream.hidden)
        if len(history) == span + 1:
            distances.append(mean_angle(history[0], history[-1], angular))
    return distances


def choose_layers(hf: Any, config: LLMPruneConfig,
                  calibration: Calibration) -> tuple[list[int], list[float]]:
    """The layer indices to drop and the scores they were chosen by."""
    count = len(decoder_layers(hf))
    drop = layers_to_drop(count, config.sparsity)
    if drop == 0:
        return [], []
    if config.depth_criterion == DepthCriterion.BLOCK_INFLUENCE:
        scores = span_distances(hf, calibration, 1, angular=False)
        order = sorted(range(count), key=lambda i: (scores[i], i))
        return sorted(order[:drop]), scores
    scores = span_distances(hf, calibration, drop, angular=True)
    start = min(range(len(scores)), key=lambda i: (scores[i], i))
    return list(range(start, start + drop)), scores


def drop_layers(hf: Any, drop: list[int]) -> None:
    """Remove decoder layers ``drop`` of ``hf`` in place and renumber the rest."""
    layers = decoder_layers(hf)
    keep = [i for i in range(len(layers)) if i not in set(drop)]
    if not keep:
        raise InputError("depth pruning would remove every decoder layer")
    hf.model.layers = nn.ModuleList([layers[i] for i in keep])
    for new, layer in enumerate(hf.model.layers):
        for module in layer.modules():
            if "layer_idx" in module.__dict__:
                module.layer_idx = new
    config = hf.config
    config.num_hidden_layers = len(keep)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        config.layer_types = [layer_types[i] for i in keep]
