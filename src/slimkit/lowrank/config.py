"""The low-rank config: one frozen dataclass, validated on creation; CLI flags map onto it field
by field."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from slimkit.config import coerce_enums, config_from_dict, config_to_dict
from slimkit.errors import InputError
from slimkit.selector import Selector


class RankRule(str, enum.Enum):
    ENERGY = "energy"  # the smallest rank keeping this share of the squared singular values
    RATIO = "ratio"  # this fraction of the layer's full rank
    RANK = "rank"  # one fixed rank (an error where a layer allows less)


DEFAULT_LAYERS = ("type:Linear", "type:Conv2d")


class ConvMethod(str, enum.Enum):
    CHANNEL = "channel"  # k x k conv with r outputs, then a 1x1 conv (SVD of O x (I k k))
    TUCKER2 = "tucker2"  # 1x1 conv to r2, k x k core r2 -> r1, 1x1 conv to O (HOSVD)


@dataclass(frozen=True)
class LowRankConfig:
    """How to factorise.

    Args:
        rule: how each layer's rank is chosen: ``energy``, ``ratio`` or ``rank``.
        energy: for ``energy``: the share of the squared singular values kept, in (0, 1].
        ratio: for ``ratio``: the fraction of the full rank kept, in (0, 1].
        rank: for ``rank``: the rank of every factorised layer (Tucker-2: both ranks).
        conv_method: ``channel`` (spatial SVD) or ``tucker2`` for k x k convolutions (1x1
            convolutions are always factorised like Linear layers).
        layers: rules (``name:``, ``re:``, ``type:``; see Selector) of the layers considered;
            by default every ``Linear`` and ``Conv2d`` (given rules must each match a layer).
        exclude: rules of layers left alone.
        layer_ranks: ``(rule, rank)`` pairs that fix the rank of matching layers (first
            matching rule wins), whatever ``rule`` says.
        min_saving: a layer is factorised only if its MACs drop by more than this fraction
            (0: any reduction); the others are skipped and reported.
        verify: export the result to ONNX and check ONNX Runtime against torch.

    Example:
        >>> LowRankConfig(rule="ratio", ratio=0.25).rule
        <RankRule.RATIO: 'ratio'>
    """

    rule: RankRule = RankRule.ENERGY
    energy: float = 0.9
    ratio: float = 0.25
    rank: int | None = None
    conv_method: ConvMethod = ConvMethod.CHANNEL
    layers: tuple[str, ...] = DEFAULT_LAYERS
    exclude: tuple[str, ...] = ()
    layer_ranks: tuple[tuple[str, int], ...] = ()
    min_saving: float = 0.0
    verify: bool = True

    def __post_init__(self) -> None:
        coerce_enums(self, {"rule": RankRule, "conv_method": ConvMethod})
        for name in ("layers", "exclude"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            Selector(getattr(self, name))  # validates the rules' syntax
        object.__setattr__(self, "layer_ranks",
                           tuple((str(rule), r) for rule, r in self.layer_ranks))
        Selector(tuple(rule for rule, _ in self.layer_ranks))
        _fraction(self.energy, "energy")
        _fraction(self.ratio, "ratio")
        if self.rule == RankRule.RANK and self.rank is None:
            raise InputError("rule 'rank' needs rank (e.g. rank=64 or --rank 64)")
        for what, value in [("rank", self.rank), *((f"rank of rule '{r}'", v)
                                                    for r, v in self.layer_ranks)]:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise InputError(f"{what} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.min_saving < 1.0:
            raise InputError(f"min_saving must be in [0, 1), got {self.min_saving}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LowRankConfig:
        """The config from ``to_dict``'s output (an allow-list of fields; unknown keys fail)."""
        return config_from_dict(cls, data, "low-rank")


def _fraction(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise InputError(f"{name} must be in (0, 1], got {value!r}")
