"""Execution tuning: find, by measurement, the runtime options and batch size that serve an
objective best on this machine, and save them as a deployable :class:`RuntimeConfig`.

The search is coordinate-wise (intra-op threads, then execution mode with inter-op threads,
then graph optimisation level, then batch size for throughput), each step a race measured
side by side: candidates take turns within each round (rotating who goes first), threads
pinned. The incumbent (at first the default options) is replaced only when a candidate beats
it beyond noise: its per-round ratios must exceed ``1 + min_gain`` at the median and favour it
in at least three rounds out of four. A final head-to-head between the default and the winner
repeats that test, so the chosen config is never slower than the default, as measured.
"""

from __future__ import annotations

import enum
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.bench.core import timed_runs
from slimkit.config import coerce_enums, config_to_dict
from slimkit.data import synthetic
from slimkit.errors import InputError
from slimkit.model import Model
from slimkit.runtime import RuntimeOptions, Session, create_session
from slimkit.runtime.config import RuntimeConfig

logger = logging.getLogger(__name__)


class Objective(str, enum.Enum):
    """``latency``: lowest latency at batch 1; ``throughput``: most examples per second with
    the p99 latency of one batch within ``latency_bound_ms``."""

    LATENCY = "latency"
    THROUGHPUT = "throughput"


AUTO = "auto"
AUTO_RUNTIMES = ("onnxruntime", "openvino")  # what runtime "auto" picks from, when installed


@dataclass(frozen=True)
class TuneConfig:
    """What to tune and how long to measure. ``threads`` None: 1 .. the cores available.
    ``runtime`` ``auto``: the fastest of ONNX Runtime and OpenVINO (when installed), measured
    side by side first (``slimkit.bench.runtime_pick``), then tuned."""

    runtime: str = "onnxruntime"
    objective: Objective = Objective.LATENCY
    latency_bound_ms: float | None = None
    threads: tuple[int, ...] | None = None
    batches: tuple[int, ...] = (1, 4, 16, 32)
    rounds: int = 6
    round_seconds: float = 0.15
    min_gain: float = 0.03
    seed: int = 0

    def __post_init__(self) -> None:
        coerce_enums(self, {"objective": Objective})
        if self.rounds < 4:
            raise InputError(f"rounds must be >= 4 to tell a gain from noise, got {self.rounds}")
        if any(t < 1 for t in self.threads or ()) or not self.batches or \
                any(b < 1 for b in self.batches):
            raise InputError("threads and batch sizes must be >= 1")
        if self.latency_bound_ms is not None and not self.latency_bound_ms > 0:
            raise InputError(f"latency_bound_ms must be > 0, got {self.latency_bound_ms}")
        if not 0 <= self.min_gain < 1 or not self.round_seconds > 0:
            raise InputError("min_gain must be in [0, 1) and round_seconds > 0")


@dataclass(frozen=True)
class Candidate:
    options: RuntimeOptions
    batch: int = 1

    def describe(self) -> dict[str, Any]:
        return {**self.options.to_dict(), "batch": self.batch}


@dataclass
class TuneResult:
    """The chosen config, the default's and the chosen's score, and every race run."""

    config: RuntimeConfig
    default_score: float
    chosen_score: float
    unit: str
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gain(self) -> float:
        """How much better the chosen config scored than the default (1.0: it is the default)."""
        if self.unit == "ms":
            return self.default_score / self.chosen_score
        return self.chosen_score / self.default_score

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "default_score": self.default_score,
                "chosen_score": self.chosen_score, "unit": self.unit,
                "gain": round(self.gain, 4), "steps": self.steps}


def tune(model: Model, config: TuneConfig | None = None) -> TuneResult:
    """Measure runtime options (and batch size) for ``config.objective``; keep the default
    unless a candidate is better beyond noise.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> r = tune(tiny_model(), TuneConfig(runtime="torch", threads=(1,), rounds=4,
        ...                                   round_seconds=0.01))
        >>> r.config.runtime, r.gain >= 1.0
        ('torch', True)
    """
    config = config or TuneConfig()
    from slimkit.parallel.assign import available_cores

    default = Candidate(RuntimeOptions())
    best, steps = default, []
    if config.runtime == AUTO:
        from slimkit.bench.runtime_pick import pick_runtime

        pick = pick_runtime(model, AUTO_RUNTIMES, rounds=config.rounds)
        steps.append({"step": "runtime", **pick.to_dict()})
        config = replace(config, runtime=pick.runtime)
    with tempfile.TemporaryDirectory(prefix="slimkit-tune-") as tmp:
        target = _target(model, config.runtime, Path(tmp))
        for name, make in _steps(config, available_cores()):
            candidates = [best] + [c for c in make(best) if c != best]
            if len(candidates) > 1:
                best, step = _race(target, candidates, config)
                steps.append({"step": name, **step})
        final = [default, best] if best != default else [default]
        chosen, step = _race(target, final, config, rounds=config.rounds * 2)
    steps.append({"step": "final: default vs winner", **step})
    scores = step["scores"]
    meta = {"objective": config.objective.value, "latency_bound_ms": config.latency_bound_ms,
            "model": model.name, "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "tune_config": config_to_dict(config)}
    result = RuntimeConfig(config.runtime, chosen.options, chosen.batch, meta)
    return TuneResult(result, scores[0], scores[final.index(chosen)], _unit(config), steps)


def _unit(config: TuneConfig) -> str:
    return "ms" if config.objective is Objective.LATENCY else "examples/s"


def _target(model: Model, runtime: str, folder: Path) -> Model:
    """The model the runtime opens: a torch model is exported once for ONNX runtimes."""
    from slimkit.bench.core import TORCH_RUNTIMES
    from slimkit.export.onnx import export_onnx

    if runtime in TORCH_RUNTIMES or model.module is None:
        return model
    return export_onnx(model, folder / "model.onnx").model


Step = tuple[str, Callable[[Candidate], list[Candidate]]]


def _steps(config: TuneConfig, cores: int) -> list[Step]:
    threads = config.threads or tuple(range(1, cores + 1))
    ort = config.runtime == "onnxruntime"

    def with_options(c: Candidate, **changes: Any) -> Candidate:
        return replace(c, options=replace(c.options, **changes))

    steps: list[Step] = [("intra-op threads",
                          lambda c: [with_options(c, threads=t) for t in threads])]
    if ort:
        steps.append(("execution mode", lambda c: [
            with_options(c, execution_mode="parallel", inter_op_threads=i)
            for i in sorted({1, min(2, cores)})]))
        steps.append(("graph optimisation", lambda c: [
            with_options(c, graph_optimization=g) for g in ("basic", "extended", "all")]))
    if config.objective is Objective.THROUGHPUT:
        steps.append(("batch size", lambda c: [replace(c, batch=b) for b in config.batches]))
    return steps


def _race(model: Model, candidates: list[Candidate], config: TuneConfig,
          rounds: int | None = None) -> tuple[Candidate, dict[str, Any]]:
    """Measure ``candidates`` side by side; the first is the incumbent. Returns the winner."""
    rounds = rounds or config.rounds
    sessions: list[Session] = []
    try:
        inputs = []
        for c in candidates:
            sessions.append(create_session(model, config.runtime, c.options))
            inputs.append(synthetic(model.inputs, c.batch, seed=config.seed).first_batch(c.batch))
        iters = [_calibrate(s, x, config.round_seconds) for s, x in zip(sessions, inputs,
                                                                         strict=True)]
        times: list[list[list[float]]] = [[] for _ in candidates]
        for r in range(rounds):
            order = list(range(len(candidates)))
            for i in order[r % len(order):] + order[:r % len(order)]:
                times[i].append(timed_runs(sessions[i], inputs[i], iters[i]))
    finally:
        for s in sessions:
            s.close()
    scores = [_score(t, c.batch, config) for t, c in zip(times, candidates, strict=True)]
    winner = _pick(candidates, times, config)
    return winner, {"candidates": [c.describe() for c in candidates], "scores": scores,
                    "unit": _unit(config), "chosen": candidates.index(winner)}


def _pick(candidates: list[Candidate], times: list[list[list[float]]],
          config: TuneConfig) -> Candidate:
    """The incumbent (index 0) unless a candidate beats it beyond noise, then the best such."""
    base = _per_round(times[0], candidates[0].batch, config)
    best, best_gain = candidates[0], 1.0
    for c, t in zip(candidates[1:], times[1:], strict=True):
        if not _within_bound(t, config):
            continue
        ratios = _per_round(t, c.batch, config) / base  # > 1: the candidate is better
        gain = float(np.median(ratios))
        wins = float(np.mean(ratios > 1.0))
        if gain > 1.0 + config.min_gain and wins >= 0.75 and gain > best_gain:
            best, best_gain = c, gain
    return best


def _per_round(times: list[list[float]], batch: int, config: TuneConfig) -> np.ndarray:
    """Per round, the score as 'higher is better': 1/latency or examples per second."""
    medians = np.asarray([np.median(r) for r in times])
    return (1.0 if config.objective is Objective.LATENCY else batch) / medians


def _within_bound(times: list[list[float]], config: TuneConfig) -> bool:
    if config.objective is Objective.LATENCY or config.latency_bound_ms is None:
        return True
    return float(np.percentile(np.concatenate(times), 99)) * 1e3 <= config.latency_bound_ms


def _score(times: list[list[float]], batch: int, config: TuneConfig) -> float:
    median = float(np.median(np.concatenate(times)))
    if config.objective is Objective.LATENCY:
        return round(median * 1e3, 4)
    return round(batch / median, 2)


def _calibrate(session: Session, x: dict[str, np.ndarray], seconds: float) -> int:
    with session.pinned():
        session.run(x)  # warm-up (and torch.compile's compile)
    once = float(np.median(timed_runs(session, x, 3)))
    return max(3, int(seconds / max(once, 1e-6)))
