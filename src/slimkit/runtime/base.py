"""The runtime registry: each runtime turns a Model into a Session that runs named NumPy inputs.

Thread counts are pinned only inside ``Session.pinned()`` and restored afterwards, so slimkit
never leaves the process's thread settings changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from slimkit.errors import InputError
from slimkit.model import Model
from slimkit.registry import Registry


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run: thread count, execution provider (ONNX Runtime) and graph optimisation level.

    ``optimized_model_path`` saves ONNX Runtime's optimised graph there (for inspection).
    """

    threads: int = 1
    provider: str = "cpu"
    graph_optimization: str = "all"
    optimized_model_path: Path | None = None

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}")


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
    return RUNTIMES.get(runtime)(model, options or RuntimeOptions())


@contextlib.contextmanager
def open_session(model: Model, runtime: str = "torch",
                 options: RuntimeOptions | None = None) -> Iterator[Session]:
    session = create_session(model, runtime, options)
    try:
        yield session
    finally:
        session.close()


def runtime_names() -> list[str]:
    _ensure_registered()
    return RUNTIMES.names()


def _ensure_registered() -> None:
    # importing the modules registers their runtimes; kept lazy so onnxruntime loads on use
    import slimkit.runtime.onnxrt  # noqa: F401
    import slimkit.runtime.torch_eager  # noqa: F401
