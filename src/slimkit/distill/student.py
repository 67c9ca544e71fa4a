"""Students made from the teacher: a shallower transformer that keeps every k-th encoder layer
(initialised from the teacher's weights, its config updated so it saves and loads as a normal
Hugging Face model), and a narrower one by structured pruning (``slimkit.prune``)."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from torch import nn

from slimkit.errors import InputError
from slimkit.model import Model


def kept_layers(num_layers: int, keep_every: int) -> list[int]:
    """Indices of the layers kept: every ``keep_every``-th, counted so the last layer (whose
    output the pooling reads) is always kept.

    Example:
        >>> kept_layers(6, 2), kept_layers(6, 3), kept_layers(5, 2)
        ([1, 3, 5], [2, 5], [0, 2, 4])
    """
    return list(range(num_layers - 1, -1, -keep_every))[::-1]


def shallow_student(teacher: Model, keep_every: int = 2) -> Model:
    """A copy of a Hugging Face encoder (BERT family, as ``load_model`` wraps it) that keeps
    every ``keep_every``-th encoder layer, with the teacher's weights in them.

    Raises:
        InputError: the teacher is not a wrapped Hugging Face encoder with ``encoder.layer``,
            or ``keep_every`` would leave it as deep as it was.
    """
    module = teacher.require_module("making a shallow student")
    hf = _hf_model(module, teacher)
    layers = hf.encoder.layer
    n = len(layers)
    if not isinstance(keep_every, int) or isinstance(keep_every, bool) or \
            not 2 <= keep_every <= n:
        raise InputError(f"keep_every must be an integer in [2, {n}] for '{teacher.name}' "
                         f"({n} encoder layers), got {keep_every!r}")
    keep = kept_layers(n, keep_every)
    student = copy.deepcopy(module)
    s_hf: Any = student.model
    s_hf.encoder.layer = nn.ModuleList([s_hf.encoder.layer[i] for i in keep])
    s_hf.config.num_hidden_layers = len(keep)
    for new_index, layer in enumerate(s_hf.encoder.layer):
        for sub in layer.modules():
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = new_index
    meta = {**teacher.meta, "student_of": teacher.source, "kept_layers": keep}
    return replace(teacher, module=student.eval(), name=f"{teacher.name}-{len(keep)}L",
                   source=f"{teacher.source} (layers {keep})", meta=meta)


def _hf_model(module: nn.Module, teacher: Model) -> Any:
    hf = getattr(module, "model", None)
    encoder = getattr(hf, "encoder", None)
    if hf is None or not isinstance(getattr(encoder, "layer", None), nn.ModuleList) or \
            not hasattr(hf, "config"):
        raise InputError(f"'{teacher.name}' is not a Hugging Face encoder with encoder.layer "
                         "(BERT family) as load_model wraps it; a shallow student is built "
                         "only from such models")
    return hf


def narrow_student(teacher: Model, ratio: float, **prune_options: Any) -> Any:
    """A narrower student: ``slimkit.prune`` of the teacher (structured, ``ratio`` of the
    channels removed). Returns the ``PruneResult``: its ``model`` is the student and its
    ``plan`` is what ``save_student`` needs to write it.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> narrow_student(tiny_model("cnn"), 0.5, round_to=2).model.module.conv.out_channels
        4
    """
    from slimkit.prune import PruneConfig, prune

    return prune(teacher, PruneConfig(ratio=ratio, **prune_options))
