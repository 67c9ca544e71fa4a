"""Side-by-side latency benchmark: every (model, runtime) case of one thread/batch setting is
measured interleaved in the same run (warm-up, rounds in rotating order, pinned threads), so
the speed ratios hold on a shared, noisy machine even when absolute times drift."""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from slimkit.data import synthetic
from slimkit.errors import InputError
from slimkit.model import Model
from slimkit.progress import progress
from slimkit.runtime import RuntimeOptions, Session, create_session

T = TypeVar("T")
BUSY_CORES = 0.25  # other processes' CPU above which a timing is flagged
TORCH_RUNTIMES = ("torch", "torch-compile")  # runtimes that run the torch module itself


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
    runtime_options: RuntimeOptions | None = None  # e.g. a tuned config; threads/provider above win

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
    # what the model takes to run here: RSS rise (from a trimmed heap) while the session opened
    # and warmed up, plus a torch module's weights (already resident before)
    peak_memory_mb: float
    runs: int
    other_cpu_cores: float = 0.0  # CPU used by other processes while this case ran
    speedup: float = 1.0  # p50 of this setting's first case / p50 of this case
    compile_seconds: float = 0.0  # torch.compile: compile time, kept out of the latencies


@dataclass
class BenchResult:
    rows: list[BenchRow]
    config: BenchConfig
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "skipped": self.skipped,
                "warnings": self.warnings, "config": _config_dict(self.config)}


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    data = asdict(config)
    if config.runtime_options is not None:
        data["runtime_options"] = config.runtime_options.to_dict()
    return data


def benchmark(models: list[Model], config: BenchConfig | None = None) -> BenchResult:
    """Measure every model on every runtime, thread count and batch size of ``config``.

    A torch model is exported (and verified) to ONNX once per call for the ONNX Runtime cases.
    A case a runtime cannot run (an ONNX file on the torch runtime) is skipped and listed.
    ``other_cpu_cores`` in each row is the CPU other processes used while that setting was
    measured: above ``BUSY_CORES`` the result carries a warning (a busy machine distorts
    multi-thread timings most).

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
    with tempfile.TemporaryDirectory(prefix="slimkit-bench-") as tmp:
        targets = _targets(models, config, Path(tmp), skipped)
        for threads, batch in progress(settings, "benchmarking", len(settings)):
            rows += _measure_setting(targets, config, threads, batch)
    warnings = [f"other processes used {row.other_cpu_cores:.2f} cores while "
                f"{row.model}/{row.runtime} was measured; timings may be distorted"
                for row in rows if row.other_cpu_cores > BUSY_CORES]
    return BenchResult(rows, config, skipped, warnings)


def _targets(models: list[Model], config: BenchConfig, tmp: Path,
             skipped: list[dict[str, str]]) -> list[tuple[Model, str, Model]]:
    """(model as given, runtime, model the runtime opens): ONNX exports made once here."""
    from slimkit.export.onnx import export_onnx

    targets = []
    for i, model in enumerate(models):
        exported: Model | None = None
        for runtime in config.runtimes:
            if runtime in TORCH_RUNTIMES and model.module is None:
                skipped.append({"model": model.name, "runtime": runtime,
                                "reason": "an ONNX file has no torch module to run"})
                continue
            if runtime not in TORCH_RUNTIMES and model.module is not None:
                exported = exported or export_onnx(model, tmp / f"{i}-{model.name}.onnx").model
                targets.append((model, runtime, exported))
            else:
                targets.append((model, runtime, model))
    if not targets:
        raise InputError("no (model, runtime) case can run; add --runtime onnxruntime")
    return targets


def _measure_setting(targets: list[tuple[Model, str, Model]], config: BenchConfig,
                     threads: int, batch: int) -> list[BenchRow]:
    from slimkit.analyse.stats import resident_weights_mb, run_measuring_rss

    options = replace(config.runtime_options or RuntimeOptions(), threads=threads,
                      provider=config.provider)
    sessions: list[Session] = []
    try:
        memory, iters, inputs = [], [], []
        for model, runtime, opened in targets:
            x = synthetic(model.inputs, batch, seed=config.seed,
                          dynamic=config.sequence).first_batch(batch)
            session, mb = run_measuring_rss(
                functools.partial(_open_and_warm, opened, runtime, options, x, config.warmup))
            sessions.append(session)
            memory.append(mb + (resident_weights_mb(opened) if runtime in TORCH_RUNTIMES
                                else 0.0))
            inputs.append(x)
            iters.append(_calibrate(session, x, config))
        timings: list[list[float]] = [[] for _ in targets]
        others: list[float] = [0.0 for _ in targets]
        for r in range(config.rounds):
            order = list(range(len(targets)))
            order = order[r % len(order):] + order[:r % len(order)]  # rotate who goes first
            for i in order:
                runs, busy = _with_cpu_of_others(
                    functools.partial(timed_runs, sessions[i], inputs[i], iters[i]))
                timings[i] += runs
                others[i] = max(others[i], busy)
        compiled = [float(getattr(s, "total_compile_seconds", 0.0)) for s in sessions]
    finally:
        for session in sessions:
            session.close()
    rows = [_row(model, runtime, threads, batch, t, mem, other)
            for (model, runtime, _), t, mem, other in zip(targets, timings, memory, others,
                                                          strict=True)]
    for row, seconds in zip(rows, compiled, strict=True):
        row.speedup = rows[0].p50_ms / row.p50_ms if row.p50_ms else float("nan")
        row.compile_seconds = round(seconds, 3)
    return rows


def _open_and_warm(model: Model, runtime: str, options: RuntimeOptions,
                   x: dict[str, np.ndarray], warmup: int) -> Session:
    session = create_session(model, runtime, options)
    _warm(session, x, warmup)
    return session


def _with_cpu_of_others(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the CPU cores other processes used meanwhile (system busy time minus this
    process's CPU time, over the wall time)."""
    import psutil

    me = psutil.Process()
    sys0, own0, wall0 = psutil.cpu_times(), me.cpu_times(), time.perf_counter()
    result = fn()
    sys1, own1, wall = psutil.cpu_times(), me.cpu_times(), time.perf_counter() - wall0
    busy = (sys1.user + sys1.system + getattr(sys1, "steal", 0.0)) - \
        (sys0.user + sys0.system + getattr(sys0, "steal", 0.0))
    own = (own1.user + own1.system) - (own0.user + own0.system)
    return result, max(busy - own, 0.0) / max(wall, 1e-9)


def _warm(session: Session, x: dict[str, np.ndarray], n: int) -> None:
    with session.pinned():
        for _ in range(max(n, 1)):
            session.run(x)


def _calibrate(session: Session, x: dict[str, np.ndarray], config: BenchConfig) -> int:
    once = timed_runs(session, x, 1)[0]
    return max(config.min_iters, int(config.round_seconds / max(once, 1e-6)))


def timed_runs(session: Session, x: dict[str, np.ndarray], n: int) -> list[float]:
    """``n`` timed runs of ``session`` on ``x`` (seconds each), threads pinned."""
    out = []
    with session.pinned():
        for _ in range(n):
            start = time.perf_counter()
            session.run(x)
            out.append(time.perf_counter() - start)
    return out


def _row(model: Model, runtime: str, threads: int, batch: int, times: list[float],
         memory: float, other_cores: float) -> BenchRow:
    ms = np.asarray(times) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return BenchRow(model.name, runtime, threads, batch, p50, p90, p99, float(ms.mean()),
                    batch * 1e3 / p50, round(memory, 2), len(times), round(other_cores, 3))


def compare_latency(model: Model, candidate: Model, threads: int = 1) -> dict[str, Any]:
    """ONNX Runtime latency of ``model`` and ``candidate`` (e.g. its compressed copy) measured
    side by side at batch 1; ``speedup`` is the candidate's. Weight masks must be baked first
    (``slimkit.graph.masks.finalize``): the runtime sees plain weights."""
    result = benchmark([model, candidate], BenchConfig(
        runtimes=("onnxruntime",), threads=(threads,), batches=(1,), rounds=5,
        round_seconds=0.2))
    rows = [asdict(row) for row in result.rows]
    return {"rows": rows, "speedup": round(rows[-1]["speedup"], 3), "threads": threads,
            "warnings": result.warnings}
