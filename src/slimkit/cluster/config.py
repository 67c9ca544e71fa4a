"""The clustering config: one frozen dataclass, validated on creation."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from slimkit.cluster.kmeans import Init
from slimkit.config import coerce_enums, config_from_dict, config_to_dict
from slimkit.errors import InputError
from slimkit.selector import Selector

MAX_CLUSTERS = 256  # indices fit in one byte; the .slim codebook layouts hold at most 256


class Granularity(str, enum.Enum):
    LAYER = "layer"  # one codebook per layer
    CHANNEL = "channel"  # one codebook per output channel (row of the weight)


@dataclass(frozen=True)
class ClusterConfig:
    """How to share weights.

    Args:
        clusters: centroids per codebook (2..256; 16 = 4-bit, 32 = 5-bit, 256 = 8-bit indices).
        init: ``linear`` (Deep Compression's best), ``density`` or ``kmeans++``.
        granularity: one codebook per ``layer`` or per output ``channel``.
        preserve_sparsity: zero weights stay zero and are not a centroid (after pruning).
        exclude: layer rules (``name:``, ``re:``, ``type:``) of Conv/Linear layers left alone.
        epochs: epochs of fine-tuning the shared centroids (assignments fixed; biases and
            norms train too); 0 skips it; more than 0 needs labelled data.
        lr: Adam learning rate of that fine-tuning.
        batch_size: examples per fine-tuning step.
        max_iter: k-means iterations.
        seed: seeds k-means++ and the order of fine-tuning examples.

    Example:
        >>> ClusterConfig(clusters=16, init="density").init
        <Init.DENSITY: 'density'>
    """

    clusters: int = 32
    init: Init = Init.LINEAR
    granularity: Granularity = Granularity.LAYER
    preserve_sparsity: bool = True
    exclude: tuple[str, ...] = ()
    epochs: int = 0
    lr: float = 1e-4
    batch_size: int = 64
    max_iter: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        coerce_enums(self, {"init": Init, "granularity": Granularity})
        object.__setattr__(self, "exclude", tuple(self.exclude))
        Selector(self.exclude)
        if isinstance(self.clusters, bool) or not isinstance(self.clusters, int) \
                or not 2 <= self.clusters <= MAX_CLUSTERS:
            raise InputError(f"clusters must be an integer in [2, {MAX_CLUSTERS}], got "
                             f"{self.clusters!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.max_iter < 1:
            raise InputError("epochs must be >= 0, batch_size and max_iter >= 1")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive number, got {self.lr!r}")

    @property
    def bits(self) -> int:
        """Index width of one weight: ``ceil(log2(clusters))``."""
        return math.ceil(math.log2(self.clusters))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        """The config from ``to_dict``'s output (an allow-list of fields; unknown keys fail)."""
        return config_from_dict(cls, data, "clustering")
