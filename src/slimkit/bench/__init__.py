"""Measuring speed: the side-by-side latency benchmark (``core``), the machine it ran on
(``environment``) and the tuner of threads, execution mode and batch (``tune``)."""

from slimkit.bench.core import (
    TORCH_RUNTIMES,
    BenchConfig,
    BenchResult,
    BenchRow,
    benchmark,
    timed_runs,
)

__all__ = ["TORCH_RUNTIMES", "BenchConfig", "BenchResult", "BenchRow", "benchmark", "timed_runs"]
