"""The advisor: measure a model on this CPU, then say which compression techniques will pay and
why, each with a predicted speed-up (Amdahl's law on measured numbers) and, when asked, the
speed-up measured by a quick trial of that technique.

Measured first: ONNX Runtime's kernel time by operator type (its own profiler), MACs by layer
type, and this CPU's integer-over-float GEMM throughput (the quantization preflight's
micro-benchmark). A technique's prediction uses only these and the structure of its result
(e.g. the MACs a pruning plan leaves), never a rule of thumb about int8: on an AVX2 CPU without
VNNI the integer GEMM gain is whatever the micro-benchmark measures (none on Zen 1, 1.7-1.9x on
Zen 3).

Techniques live in ``TECHNIQUES`` (one small class each, in ``slimkit.advise.techniques``);
a new technique registers its own prediction and trial there.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from slimkit.advise.config import Advice, AdviseConfig, Measurements, ordering_agrees
from slimkit.model import Model

log = logging.getLogger(__name__)


def measure(model: Model, config: AdviseConfig) -> Measurements:
    """Profile ``model`` and this CPU (seconds of work)."""
    from slimkit.analyse.profile import analyze
    from slimkit.hardware import cpu_info, has_int8_dot_product

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
    from slimkit.advise.techniques import TECHNIQUES, Trial

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
