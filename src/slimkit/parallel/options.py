"""The options of data-parallel runs: start method, in-flight depth, timeouts, pinning."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from slimkit.errors import InputError
from slimkit.runtime.base import RuntimeOptions


class StartMethod(str, enum.Enum):
    """How worker processes start; ``fork`` is not offered (unsafe with thread pools)."""

    SPAWN = "spawn"
    FORKSERVER = "forkserver"


@dataclass(frozen=True)
class AdvancedParallelOptions:
    """Rarely changed knobs of :class:`DataParallel`.

    ``shard_timeout`` bounds how long a worker may take over one shard (None: no bound; a hung
    worker then hangs the run). ``runtime_options`` carries the provider and graph optimisation
    level; its ``threads`` is replaced by ``threads_per_worker``.
    """

    start_method: str = StartMethod.SPAWN.value
    in_flight_per_worker: int = 2
    shard_timeout: float | None = 300.0
    start_timeout: float = 300.0
    pin_cores: bool = False
    runtime_options: RuntimeOptions = field(default_factory=RuntimeOptions)

    def __post_init__(self) -> None:
        try:
            StartMethod(self.start_method)
        except ValueError:
            raise InputError(f"start_method '{self.start_method}' is not supported; use one of "
                             f"{[m.value for m in StartMethod]} ('fork' is unsafe with the "
                             "thread pools of torch and ONNX Runtime)") from None
        positive_int(self.in_flight_per_worker, "in_flight_per_worker")
        if self.shard_timeout is not None and not self.shard_timeout > 0:
            raise InputError(f"shard_timeout must be > 0 seconds or None, got "
                             f"{self.shard_timeout}")
        if not self.start_timeout > 0:
            raise InputError(f"start_timeout must be > 0 seconds, got {self.start_timeout}")
        if self.runtime_options.optimized_model_path is not None:
            raise InputError("optimized_model_path cannot be used with several workers (they "
                             "would all write the file); save it with one session instead")


def positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_runtime(runtime: str) -> str:
    from slimkit.runtime import runtime_names

    if runtime not in runtime_names():
        raise InputError(f"unknown runtime '{runtime}'; known: {', '.join(runtime_names())}")
    return runtime
