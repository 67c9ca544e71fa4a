"""What ``prune_llm`` is told: one frozen config for every way of pruning a decoder LM."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from slimkit.config import coerce_enums, config_to_dict
from slimkit.errors import InputError

CALIBRATION_TEXT = "builtin:python-reference:calibration"


class LLMPruneMethod(str, enum.Enum):
    """How weights are chosen and removed.

    ``magnitude``, ``wanda`` and ``sparsegpt`` zero single weights of the decoder layers'
    Linear layers (unstructured or N:M; same shapes, so no speed-up on dense runtimes);
    ``width`` removes attention heads and FFN neurons (smaller matrices); ``depth`` removes
    whole decoder layers.
    """

    MAGNITUDE = "magnitude"
    WANDA = "wanda"
    SPARSEGPT = "sparsegpt"
    WIDTH = "width"
    DEPTH = "depth"


SPARSE_METHODS = (LLMPruneMethod.MAGNITUDE, LLMPruneMethod.WANDA, LLMPruneMethod.SPARSEGPT)


class HeadUnit(str, enum.Enum):
    """What width pruning removes from grouped-query attention: ``query`` heads evenly in every
    key/value group (the key/value heads, hence the KV cache, stay), or whole key/value
    ``group``s with their query heads (the KV cache shrinks too)."""

    QUERY = "query"
    GROUP = "group"


class DepthCriterion(str, enum.Enum):
    """How depth pruning ranks layers on calibration text: ``block-influence`` (ShortGPT:
    ``1 - cos(input, output)`` of each layer, the lowest dropped) or ``angular`` (Gromov et
    al.: the run of consecutive layers whose input and output hidden states are closest in
    angle, dropped together)."""

    BLOCK_INFLUENCE = "block-influence"
    ANGULAR = "angular"


DEFAULT_RATIO = {LLMPruneMethod.WIDTH: 0.25, LLMPruneMethod.DEPTH: 0.25}


@dataclass(frozen=True)
class LLMPruneConfig:
    """How to prune a causal LM (see :func:`slimkit.llm.prune.prune_llm`).

    Args:
        method: ``magnitude``, ``wanda``, ``sparsegpt``, ``width`` or ``depth``.
        ratio: share removed: of the weights (sparse methods, default 0.5), of the attention
            heads and FFN neurons (width, default 0.25), of the decoder layers (depth, default
            0.25). With an N:M pattern it is ``1 - N/M`` and may be left out.
        pattern: ``unstructured`` or ``N:M`` (e.g. ``2:4``: N of every M consecutive weights
            of a row are kept); sparse methods only.
        windows: calibration windows of ``window`` tokens (disjoint, spread over the text).
        window: tokens per calibration window.
        head_ratio, ffn_ratio: width only: separate shares for heads and FFN neurons
            (default ``ratio``).
        head_unit: width only: ``query`` (query heads evenly per key/value group) or
            ``group`` (whole key/value groups).
        round_to: width only: FFN widths kept a multiple of this.
        depth_criterion: depth only: ``block-influence`` or ``angular``.
        damp: SparseGPT's dampening of the Hessian diagonal (share of its mean).
        block: SparseGPT's column block.
        seed: recorded; the calibration windows are fixed by the text.

    Example:
        >>> LLMPruneConfig(method="wanda", pattern="2:4").sparsity
        0.5
    """

    method: LLMPruneMethod = LLMPruneMethod.WANDA
    ratio: float | None = None
    pattern: str = "unstructured"
    windows: int = 32
    window: int = 512
    head_ratio: float | None = None
    ffn_ratio: float | None = None
    head_unit: HeadUnit = HeadUnit.QUERY
    round_to: int = 32
    depth_criterion: DepthCriterion = DepthCriterion.BLOCK_INFLUENCE
    damp: float = 0.01
    block: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        coerce_enums(self, {"method": LLMPruneMethod, "head_unit": HeadUnit,
                            "depth_criterion": DepthCriterion})
        nm = self.nm
        if nm is not None and self.method not in SPARSE_METHODS:
            raise InputError(f"pattern {self.pattern} applies to magnitude, wanda and "
                             f"sparsegpt, not to method '{self.method.value}'")
        if nm is not None and self.ratio is not None \
                and not math.isclose(self.ratio, 1 - nm[0] / nm[1]):
            raise InputError(f"pattern {self.pattern} removes {1 - nm[0] / nm[1]:g} of the "
                             f"weights; ratio {self.ratio} contradicts it (leave ratio out)")
        for name in ("ratio", "head_ratio", "ffn_ratio"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 <= value < 1):
                raise InputError(f"{name} must be in [0, 1) (a share to remove), got {value}")
        if self.windows < 1 or self.window < 8:
            raise InputError(f"calibration needs windows >= 1 and window >= 8 tokens (got "
                             f"{self.windows}, {self.window})")
        if self.round_to < 1 or self.block < 1 or not (math.isfinite(self.damp)
                                                       and self.damp > 0):
            raise InputError("round_to and block must be >= 1 and damp > 0")

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` of an N:M pattern, None when unstructured."""
        if self.pattern == "unstructured":
            return None
        n, sep, m = self.pattern.partition(":")
        if not (sep and n.isdigit() and m.isdigit() and 0 < int(n) < int(m)):
            raise InputError(f"pattern '{self.pattern}' is not 'unstructured' or N:M with "
                             "0 < N < M (e.g. 2:4)")
        return int(n), int(m)

    @property
    def sparsity(self) -> float:
        """The share removed (of weights, heads/neurons, or layers)."""
        nm = self.nm
        if nm is not None:
            return 1 - nm[0] / nm[1]
        return self.ratio if self.ratio is not None else DEFAULT_RATIO.get(self.method, 0.5)

    @property
    def calibrated(self) -> bool:
        """Whether the method reads calibration text (magnitude does not)."""
        return self.method != LLMPruneMethod.MAGNITUDE

    def to_dict(self) -> dict[str, Any]:
        return {**config_to_dict(self), "sparsity": self.sparsity}
