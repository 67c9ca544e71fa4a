"""Side-by-side latency benchmark: every (model, runtime) case of one thread/batch setting is
measured interleaved in the same run (warm-up, rounds in rotating order, pinned threads), so
the speed ratios hold on a shared, noisy machine even when absolute times drift."""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from slimkit.data import synthetic
from slimkit.errors import InputError
from slimkit.model import Model
from slimkit.progress import progress
from slimkit.runtime import RuntimeOptions, Session, create_session


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how long.

    Each case gets ``warmup`` untimed runs, then ``rounds`` rounds of timed runs; a round lasts
    about ``round_seconds`` (at least ``min_iters`` runs). Cases take turns within each round.
    """

    runtimes: tuple[str, ...] = ("torch", "onnxruntime")
    threads: tuple[int, ...] = (1,)
    batches: tuple[int, ...] = (1,)
    sequence: int = 128
    warmup: int = 3
    rounds: int = 5
    round_seconds: float = 0.3
    min_iters: int = 3
    provider: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.runtimes:
            raise InputError("name at least one runtime")
        if any(t < 1 for t in self.threads) or any(b < 1 for b in self.batches):
            raise InputError("threads and batch sizes must be >= 1")
        if self.rounds < 1 or self.warmup < 0 or self.min_iters < 1:
            raise InputError("rounds and min_iters must be >= 1, warmup >= 0")


@dataclass
class BenchRow:
    model: str
    runtime: str
    threads: int
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # examples per second at the median latency
    peak_memory_mb: float
    runs: int
    speedup: float = 1.0  # p50 of this setting's first case / p50 of this case


@dataclass
class BenchResult:
    rows: list[BenchRow]
    config: BenchConfig
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "skipped": self.skipped,
                "config": asdict(self.config)}


def benchmark(models: list[Model], config: BenchConfig | None = None) -> BenchResult:
    """Measure every model on every runtime, thread count and batch size of ``config``.

    A case a runtime cannot run (an ONNX file on the torch runtime) is skipped and listed.

    Example:
        >>> from slimkit import load_model
        >>> m = load_model("builtin:digits-mlp")
        >>> res = benchmark([m], BenchConfig(runtimes=("torch",), rounds=1, round_seconds=0.01))
        >>> res.rows[0].runtime, res.rows[0].speedup
        ('torch', 1.0)
    """
    config = config or BenchConfig()
    if not models:
        raise InputError("benchmark needs at least one model")
    rows: list[BenchRow] = []
    skipped: list[dict[str, str]] = []
    settings = [(t, b) for t in config.threads for b in config.batches]
    for threads, batch in progress(settings, "benchmarking", len(settings)):
        cases = _open_cases(models, config, threads, skipped)
        try:
            rows += _measure_setting(cases, config, threads, batch)
        finally:
            for _, session in cases:
                session.close()
    return BenchResult(rows, config, _unique(skipped))


def _unique(items: list[dict[str, str]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _open_cases(models: list[Model], config: BenchConfig, threads: int,
                skipped: list[dict[str, str]]) -> list[tuple[Model, Session]]:
    cases = []
    for model in models:
        for runtime in config.runtimes:
            if runtime == "torch" and model.module is None:
                skipped.append({"model": model.name, "runtime": runtime,
                                "reason": "an ONNX file has no torch module to run"})
                continue
            options = RuntimeOptions(threads=threads, provider=config.provider)
            cases.append((model, create_session(model, runtime, options)))
    if not cases:
        raise InputError("no (model, runtime) case can run; add --runtime onnxruntime")
    return cases


def _measure_setting(cases: list[tuple[Model, Session]], config: BenchConfig,
                     threads: int, batch: int) -> list[BenchRow]:
    from slimkit.analyse.stats import measure_peak_rss_mb

    inputs = [synthetic(m.inputs, batch, seed=config.seed, dynamic=config.sequence)
              .first_batch(batch) for m, _ in cases]
    iters, memory = [], []
    for (_, session), x in zip(cases, inputs, strict=True):
        memory.append(measure_peak_rss_mb(functools.partial(_warm, session, x, config.warmup)))
        iters.append(_calibrate(session, x, config))
    timings: list[list[float]] = [[] for _ in cases]
    for r in range(config.rounds):
        order = list(range(len(cases)))
        order = order[r % len(order):] + order[:r % len(order)]  # rotate who goes first
        for i in order:
            timings[i] += _timed_runs(cases[i][1], inputs[i], iters[i])
    rows = [_row(m, s, threads, batch, t, mem)
            for (m, s), t, mem in zip(cases, timings, memory, strict=True)]
    for row in rows:
        row.speedup = rows[0].p50_ms / row.p50_ms if row.p50_ms else float("nan")
    return rows


def _warm(session: Session, x: dict[str, np.ndarray], n: int) -> None:
    with session.pinned():
        for _ in range(max(n, 1)):
            session.run(x)


def _calibrate(session: Session, x: dict[str, np.ndarray], config: BenchConfig) -> int:
    once = _timed_runs(session, x, 1)[0]
    return max(config.min_iters, int(config.round_seconds / max(once, 1e-6)))


def _timed_runs(session: Session, x: dict[str, np.ndarray], n: int) -> list[float]:
    out = []
    with session.pinned():
        for _ in range(n):
            start = time.perf_counter()
            session.run(x)
            out.append(time.perf_counter() - start)
    return out


def _row(model: Model, session: Session, threads: int, batch: int, times: list[float],
         memory: float) -> BenchRow:
    ms = np.asarray(times) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return BenchRow(model.name, session.runtime, threads, batch, p50, p90, p99,
                    float(ms.mean()), batch * 1e3 / p50, round(memory, 2), len(times))
