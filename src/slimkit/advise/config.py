"""What the advisor measures and says: its config, the measurements, one recommendation per
technique, the advice, and the two small formulas behind the predictions and their check."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

from slimkit.errors import InputError

TIE = 1.10  # gains closer than 10% are within the noise of a shared machine: a tie


@dataclass(frozen=True)
class AdviseConfig:
    """What to measure and how to try.

    Args:
        verify: run a quick trial of every applicable technique and measure its speed-up.
        threads: threads for the profile and every measurement.
        batch, sequence: the input measured (``sequence`` tokens for text models).
        ratio: the share removed by the pruning trials.
        seed: seeds synthetic data and the trials; written into the advice.
    """

    verify: bool = False
    threads: int = 1
    batch: int = 1
    sequence: int = 128
    ratio: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.threads < 1 or self.batch < 1 or self.sequence < 1:
            raise InputError("threads, batch and sequence must be >= 1")
        if not 0.0 < self.ratio < 1.0:
            raise InputError(f"ratio must be in (0, 1), got {self.ratio}")


@dataclass
class Measurements:
    """What the predictions are built from (all measured on this machine in this run)."""

    cpu: str
    simd: list[str]
    int8_dot_product: bool
    gemm_ratio_u8s8: float
    gemm_ratio_s8s8: float
    kernel_ms_per_run: float
    latency_by_op: dict[str, float]
    macs_by_type: dict[str, int]
    macs: int
    parameters: int
    size_bytes: int
    depthwise_mac_share: float
    transformer: bool
    threads: int


@dataclass
class Recommendation:
    technique: str
    predicted_speedup: float | None
    why: str
    pays: bool = False
    measured_speedup: float | None = None
    size_ratio: float | None = None
    fidelity: str = ""
    trial: str = ""  # what the trial did, or why none ran

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Advice:
    """The advice: measurements, recommendations best first, and (verified) whether the
    predicted ordering held."""

    model: str
    measurements: Measurements
    recommendations: list[Recommendation]
    verified: bool
    ordering_agrees: bool | None = None
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "advice", "model": self.model, "verified": self.verified,
                "ordering_agrees": self.ordering_agrees, "seed": self.seed,
                "measurements": asdict(self.measurements),
                "recommendations": [r.to_dict() for r in self.recommendations],
                "notes": self.notes}


def amdahl(covered: float, gain: float) -> float:
    """Whole-model speed-up when a ``covered`` share of the time runs ``gain`` times faster.

    Example:
        >>> round(amdahl(0.8, 2.0), 3)
        1.667
    """
    if gain <= 0:
        raise ValueError("gain must be > 0")
    return 1.0 / ((1.0 - covered) + covered / gain)


def ordering_agrees(pairs: list[tuple[float, float]], tie: float = TIE) -> bool:
    """Whether measured gains order techniques as predicted: every two techniques whose
    predictions differ by more than ``tie`` must be measured in the same order (predicted ties
    are not judged).

    Example:
        >>> ordering_agrees([(2.0, 1.6), (1.0, 0.97), (1.02, 1.05)])
        True
        >>> ordering_agrees([(2.0, 0.9), (1.0, 1.0)])
        False
    """
    for (p1, m1), (p2, m2) in itertools.combinations(pairs, 2):
        if p1 > p2 * tie and not m1 > m2:
            return False
        if p2 > p1 * tie and not m2 > m1:
            return False
    return True
