"""The pruning config: one frozen dataclass, validated on creation, that CLI flags and recipes
map onto field by field."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from slimkit.config import coerce_enums, config_from_dict, config_to_dict
from slimkit.errors import InputError
from slimkit.selector import Selector


class PruneMode(str, enum.Enum):
    STRUCTURED = "structured"  # remove whole channels: a physically smaller, faster model
    UNSTRUCTURED = "unstructured"  # zero single weights with masks: smaller files, same speed


class Scope(str, enum.Enum):
    LAYER = "layer"  # every channel group loses the same fraction
    GLOBAL = "global"  # one ranking across groups (scores normalised by each group's mean)


class GroupReduce(str, enum.Enum):
    SUM = "sum"  # a coupled channel's importance: the sum over the layers it touches
    MEAN = "mean"  # ... or their mean


@dataclass(frozen=True)
class PruneConfig:
    """How to prune.

    Args:
        mode: structured (channels removed) or unstructured (single weights masked).
        ratio: the fraction of channels (structured) or weights (unstructured) to remove,
            in [0, 1).
        head_ratio, ffn_ratio: for transformers, the fraction of attention heads and of FFN
            neurons to remove (None: ``ratio``); see ``prune/attention.py``.
        hidden_ratio: the fraction of the hidden size (a transformer's residual stream:
            embeddings, norms, every block's input and output) to remove. None: ``ratio``,
            or 0 when ``head_ratio`` or ``ffn_ratio`` is given (they describe the plan). A
            hidden size that a model output carries (an encoder's hidden states or pooled
            embedding) is always kept.
        compensate: for transformers, add the mean output of the removed heads and neurons
            to the bias of the layer reading them (needs data; ``prune/compensate.py``).
        scope: ``layer`` removes ``ratio`` of every group; ``global`` ranks all groups
            together, so unimportant groups lose more.
        importance: a criterion of ``slimkit.prune.importance.IMPORTANCE``: l1, l2, random
            (no data); taylor, saliency (gradients on data); slimming, group_lasso (a short
            sparse-training pass on labelled data first, then the trained model is pruned).
        group_reduce: how the importance of one channel is combined over the coupled layers.
        round_to: channels kept per group are a multiple of this (kernels stay efficient); a
            group keeps at least one multiple and is never emptied.
        exclude: layer rules (``name:``, ``re:``, ``type:``; see Selector) of layers whose
            shapes must not change: neither their output nor their input channels are removed.
        layer_ratios: ``(rule, ratio)`` pairs overriding ``ratio`` for the groups a matching
            layer belongs to (layer scope; first matching rule wins).
        seed: seeds the random criterion and the order of data; written into the report.
        taylor_batches, batch_size: how much data the gradient criteria read.
        penalty, sparse_epochs, sparse_lr: strength of the L1 / group-lasso penalty, epochs
            and Adam learning rate of the sparse training of slimming and group_lasso.

    Example:
        >>> PruneConfig(ratio=0.5, importance="l2").scope
        <Scope.LAYER: 'layer'>
    """

    mode: PruneMode = PruneMode.STRUCTURED
    ratio: float = 0.5
    head_ratio: float | None = None
    ffn_ratio: float | None = None
    hidden_ratio: float | None = None
    compensate: bool = False
    scope: Scope = Scope.LAYER
    importance: str = "l1"
    group_reduce: GroupReduce = GroupReduce.SUM
    round_to: int = 8
    exclude: tuple[str, ...] = ()
    layer_ratios: tuple[tuple[str, float], ...] = ()
    seed: int = 0
    taylor_batches: int = 4
    batch_size: int = 32
    penalty: float = 1e-4
    sparse_epochs: int = 2
    sparse_lr: float = 1e-3

    def __post_init__(self) -> None:
        coerce_enums(self, {"mode": PruneMode, "scope": Scope, "group_reduce": GroupReduce})
        check_ratio(self.ratio, "ratio")
        for name in ("head_ratio", "ffn_ratio", "hidden_ratio"):
            if getattr(self, name) is not None:
                check_ratio(getattr(self, name), name)
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "layer_ratios",
                           tuple((str(rule), r) for rule, r in self.layer_ratios))
        Selector(self.exclude)  # validates the rules' syntax
        Selector(tuple(rule for rule, _ in self.layer_ratios))
        for rule, ratio in self.layer_ratios:
            check_ratio(ratio, f"ratio of layer rule '{rule}'")
        if self.layer_ratios and self.scope == Scope.GLOBAL:
            raise InputError("layer_ratios apply to scope 'layer'; with scope 'global' the "
                             "ranking decides each group's share: drop one of the two")
        if self.round_to < 1:
            raise InputError(f"round_to must be >= 1 (1 turns rounding off), got {self.round_to}")
        if self.taylor_batches < 1 or self.batch_size < 1:
            raise InputError("taylor_batches and batch_size must be >= 1")
        if not (math.isfinite(self.penalty) and self.penalty > 0 and self.sparse_lr > 0
                and self.sparse_epochs >= 1):
            raise InputError("sparse training needs penalty > 0, sparse_lr > 0 and "
                             f"sparse_epochs >= 1 (got {self.penalty}, {self.sparse_lr}, "
                             f"{self.sparse_epochs})")
        from slimkit.prune.importance import IMPORTANCE

        IMPORTANCE.get(self.importance)  # an unknown name fails here, listing the known ones

    @property
    def hidden_share(self) -> float:
        """The share of the hidden size to remove (see ``hidden_ratio``)."""
        if self.hidden_ratio is not None:
            return self.hidden_ratio
        return self.ratio if self.head_ratio is None and self.ffn_ratio is None else 0.0

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneConfig:
        """The config from ``to_dict``'s output (an allow-list of fields; unknown keys fail)."""
        return config_from_dict(cls, data, "pruning")


def check_ratio(ratio: float, what: str) -> None:
    """Raise unless ``ratio`` is a finite number in [0, 1)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        raise InputError(f"{what} must be a number in [0, 1), got {ratio!r}")
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"{what} must be in [0, 1) (the fraction removed; 1 would remove "
                         f"everything), got {ratio}")
