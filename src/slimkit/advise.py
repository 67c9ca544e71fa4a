"""The advisor: measure a model on this CPU, then say which compression techniques will pay and
why, each with a predicted speed-up (Amdahl's law on measured numbers) and, when asked, the
speed-up measured by a quick trial of that technique.

Measured first: ONNX Runtime's kernel time by operator type (its own profiler), MACs by layer
type, and this CPU's integer-over-float GEMM throughput (the quantization preflight's
micro-benchmark). A technique's prediction uses only these and the structure of its result
(e.g. the MACs a pruning plan leaves), never a rule of thumb about int8: on an AVX2 CPU without
VNNI the integer GEMM gain is whatever the micro-benchmark measures (none on Zen 1, 1.7-1.9x on
Zen 3).

Techniques live in ``TECHNIQUES`` (one small class each, in ``slimkit.advise_techniques``);
a new technique registers its own prediction and trial there.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slimkit.errors import InputError
from slimkit.model import Model

log = logging.getLogger(__name__)
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


def measure(model: Model, config: AdviseConfig) -> Measurements:
    """Profile ``model`` and this CPU (seconds of work)."""
    from slimkit.analyse.profile import analyze
    from slimkit.environment import cpu_info, has_int8_dot_product

    cpu = cpu_info()
    a = analyze(model, config.batch, config.sequence, config.threads)
    u8s8, s8s8 = gemm_ratio_median()
    macs_by_type = a.stats.macs_by_type()
    ops = set(a.latency_by_op)
    transformer = bool(ops & {"Attention", "LayerNormalization", "SkipLayerNormalization",
                              "Softmax"}) and "Conv" not in ops
    return Measurements(cpu["model"], cpu["simd"], has_int8_dot_product(cpu), round(u8s8, 3),
                        round(s8s8, 3), round(a.kernel_ms_per_run, 3), a.latency_by_op,
                        macs_by_type, a.stats.macs, a.stats.parameters, a.stats.size_bytes,
                        _depthwise_share(model, a.stats), transformer, config.threads)


def gemm_ratio_median(runs: int = 3) -> tuple[float, float]:
    """The preflight's integer/float GEMM micro-benchmark run ``runs`` times, median of each
    ratio: one run on a shared machine can be thrown off by a burst of other work."""
    import statistics

    from slimkit.quantize.preflight import gemm_ratios

    measured = [gemm_ratios.__wrapped__() for _ in range(runs)]  # bypass its cache
    return (statistics.median(r[0] for r in measured), statistics.median(r[1] for r in measured))


def _depthwise_share(model: Model, stats: Any) -> float:
    """Share of MACs in depthwise convolutions (torch models; 0 when unknown)."""
    if model.module is None or not stats.macs:
        return 0.0
    modules = dict(model.module.named_modules())
    depthwise = 0
    for layer in stats.layers:
        sub = modules.get(layer.name)
        groups = getattr(sub, "groups", 1)
        if groups > 1 and groups == getattr(sub, "in_channels", 0):
            depthwise += layer.macs
    return round(depthwise / stats.macs, 4)


def advise(model: Model, verify: bool = False, config: AdviseConfig | None = None) -> Advice:
    """Measure ``model`` here, then recommend techniques with predicted (and, with ``verify``,
    measured) speed-ups, best first.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> a = advise(tiny_model("mlp"))
        >>> sorted(r.technique for r in a.recommendations)[:2]
        ['int8 dynamic', 'int8 static']
    """
    from slimkit.advise_techniques import TECHNIQUES, Trial

    config = config or AdviseConfig(verify=verify)
    if verify and not config.verify:
        config = AdviseConfig(True, config.threads, config.batch, config.sequence, config.ratio,
                              config.seed)
    m = measure(model, config)
    recs = []
    with tempfile.TemporaryDirectory(prefix="slimkit-advise-") as tmp:
        for name in TECHNIQUES.names():
            technique = TECHNIQUES.get(name)
            trial = Trial(model, config, Path(tmp) / name.replace(" ", "-"))
            rec = technique.predict(model, m, trial)
            if config.verify and rec.predicted_speedup is not None and not rec.trial:
                try:
                    technique.verify(rec, trial)
                except Exception as exc:  # one failed trial must not lose the others' results
                    log.warning("trial of %s failed: %s: %s", name, type(exc).__name__, exc)
                    rec.trial = f"trial failed: {type(exc).__name__}: {exc}"
            recs.append(rec)
    recs.sort(key=lambda r: -(r.predicted_speedup or 0.0))
    advice = Advice(model.name, m, recs, config.verify, seed=config.seed)
    measured = [(r.predicted_speedup, r.measured_speedup) for r in recs
                if r.predicted_speedup is not None and r.measured_speedup is not None]
    if config.verify and len(measured) >= 2:
        advice.ordering_agrees = ordering_agrees(measured)  # type: ignore[arg-type]
    advice.notes.append(f"speed-ups are batch-{config.batch} latency ratios in ONNX Runtime "
                        f"({config.threads} thread(s)), each trial measured side by side with "
                        "its float baseline")
    advice.notes.append("not assessed on CPU: fp16 (few fp16 kernels in the CPU execution "
                        "provider) and int4 weight-only (pays only for memory-bound decoding of "
                        "large models)")
    return advice
