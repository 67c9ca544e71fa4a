"""The runtime registry: each runtime turns a Model into a Session that runs named NumPy inputs.

Thread counts are pinned only inside ``Session.pinned()`` and restored afterwards, so slimkit
never leaves the process's thread settings changed.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from slimkit.config import coerce_enums, config_to_dict
from slimkit.errors import InputError
from slimkit.model import Model
from slimkit.registry import Registry


class ExecutionMode(str, enum.Enum):
    """ONNX Runtime's graph execution: one node at a time, or independent branches at once."""

    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"


class GraphOptimization(str, enum.Enum):
    """ONNX Runtime's graph optimisation levels."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class Precision(str, enum.Enum):
    """Compute precision; ``fp16`` only on GPU providers (CPU kernels for it are slow or absent),
    ``bf16`` only on the openvino runtime (CPUs with AVX-512 BF16 or AMX)."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


GPU_PROVIDERS = ("cuda", "tensorrt")
BF16_RUNTIMES = ("openvino",)


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run: threads, execution mode, provider/device, graph optimisation, precision.

    ``provider`` names the device: ``cpu``, ``cuda`` (torch and ONNX Runtime), ``tensorrt`` or
    ``openvino`` (ONNX Runtime); which ones this machine has is checked when a session opens.
    ``inter_op_threads`` and ``execution_mode`` apply to ONNX Runtime (torch's inter-op pool is
    fixed once the process has used it). ``optimized_model_path`` saves ONNX Runtime's optimised
    graph there, so it can be deployed without optimising again at start-up.

    Example:
        >>> o = RuntimeOptions.from_dict({"threads": 2, "execution_mode": "parallel"})
        >>> o.execution_mode.value, o.to_dict()["threads"]
        ('parallel', 2)
    """

    threads: int = 1
    inter_op_threads: int = 1
    execution_mode: ExecutionMode = ExecutionMode.SEQUENTIAL
    provider: str = "cpu"
    graph_optimization: GraphOptimization = GraphOptimization.ALL
    precision: Precision = Precision.FP32
    optimized_model_path: Path | None = None

    def __post_init__(self) -> None:
        for name in ("threads", "inter_op_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        coerce_enums(self, {"execution_mode": ExecutionMode,
                            "graph_optimization": GraphOptimization, "precision": Precision})
        if self.precision is Precision.FP16 and self.provider not in GPU_PROVIDERS:
            raise InputError(f"precision fp16 needs a GPU provider ({', '.join(GPU_PROVIDERS)}); "
                             f"provider '{self.provider}' runs fp32 (use int8 quantization for "
                             "a smaller, faster CPU model)")
        if self.optimized_model_path is not None:
            object.__setattr__(self, "optimized_model_path", Path(self.optimized_model_path))

    def to_dict(self) -> dict[str, Any]:
        data = config_to_dict(self)
        if self.optimized_model_path is not None:
            data["optimized_model_path"] = str(self.optimized_model_path)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown runtime option(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


class Session(Protocol):
    runtime: str
    options: RuntimeOptions

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def pinned(self) -> contextlib.AbstractContextManager[None]: ...

    def close(self) -> None: ...


SessionFactory = Callable[[Model, RuntimeOptions], Session]
RUNTIMES: Registry[SessionFactory] = Registry("runtime")


def create_session(model: Model, runtime: str = "torch",
                   options: RuntimeOptions | None = None) -> Session:
    """Open a session of ``runtime`` on ``model``.

    Example:
        >>> from slimkit import load_model
        >>> s = create_session(load_model("builtin:resnet18-cifar"), "torch")
        >>> s.run({"input": np.zeros((1, 3, 32, 32), np.float32)})[0].shape
        (1, 10)
    """
    _ensure_registered()
    factory = RUNTIMES.get(runtime)
    options = options or RuntimeOptions()
    if options.precision is Precision.BF16 and runtime not in BF16_RUNTIMES:
        raise InputError(f"precision bf16 runs on the {', '.join(BF16_RUNTIMES)} runtime; "
                         f"'{runtime}' would run fp32")
    return factory(model, options)


@contextlib.contextmanager
def open_session(model: Model, runtime: str = "torch",
                 options: RuntimeOptions | None = None) -> Iterator[Session]:
    session = create_session(model, runtime, options)
    try:
        yield session
    finally:
        session.close()


def takes_onnx(runtime: str) -> bool:
    """Whether ``runtime`` runs ONNX files (a torch model must be exported for it)."""
    _ensure_registered()
    return bool(getattr(RUNTIMES.get(runtime), "takes_onnx", False))


def runtime_names() -> list[str]:
    _ensure_registered()
    return RUNTIMES.names()


def _ensure_registered() -> None:
    # importing the modules registers their runtimes; kept lazy so onnxruntime loads on use
    import slimkit.runtime.onnxrt  # noqa: F401
    import slimkit.runtime.openvino  # noqa: F401  (openvino itself is imported on use)
    import slimkit.runtime.torch_compile  # noqa: F401
    import slimkit.runtime.torch_eager  # noqa: F401
