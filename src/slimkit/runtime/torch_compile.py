"""``torch.compile`` (inductor) runtime: compiled once per input-shape set, on first use.

The compile is done inside the first ``run`` of each new set of input shapes (within the
caller's ``pinned()`` thread count, which inductor bakes into its generated kernels); its time
is kept apart in ``compile_seconds``, so a benchmark reports it separately from the latency.
Shapes are static (``dynamic=False``): each new shape set compiles its own specialised graph.
The first call of a new shape set also runs the eager module, so bad inputs give the same
``DataError`` as on the eager runtime and a compiler failure is told apart from them.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from slimkit.errors import RuntimeUnavailableError
from slimkit.model import Model
from slimkit.runtime.base import RUNTIMES, RuntimeOptions
from slimkit.runtime.torch_eager import TorchSession

logger = logging.getLogger(__name__)
Signature = tuple[tuple[str, tuple[int, ...], str], ...]


def signature(inputs: dict[str, np.ndarray]) -> Signature:
    """The shape set of ``inputs``: what one compiled graph is specialised to.

    Example:
        >>> signature({"x": np.zeros((2, 3), np.float32)})
        (('x', (2, 3), 'float32'),)
    """
    return tuple(sorted((k, tuple(v.shape), str(v.dtype)) for k, v in inputs.items()))


class TorchCompileSession(TorchSession):
    runtime = "torch-compile"

    def __init__(self, model: Model, options: RuntimeOptions) -> None:
        super().__init__(model, options)
        self.eager = self.module
        self.compiled = torch.compile(self.module, backend="inductor", dynamic=False)
        self.compile_seconds: dict[Signature, float] = {}

    @property
    def total_compile_seconds(self) -> float:
        return sum(self.compile_seconds.values())

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        key = signature(inputs)
        if key in self.compile_seconds:
            return self._forward(self.compiled, inputs)
        self._forward(self.eager, inputs)  # bad inputs fail here as a DataError
        start = time.perf_counter()
        try:
            outputs = self._forward(self.compiled, inputs)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
            raise RuntimeUnavailableError(
                f"torch.compile (inductor) could not compile model '{self.model.name}' for "
                f"inputs {[(k, s) for k, s, _ in key]}: {type(exc).__name__}: {first}. Use "
                "runtime 'torch' (eager) or 'onnxruntime'; inductor on CPU needs a C++ "
                "compiler (gcc/clang) on PATH") from exc
        self.compile_seconds[key] = time.perf_counter() - start
        logger.info("torch.compile of %s for %s took %.1f s", self.model.name, key,
                    self.compile_seconds[key])
        return outputs

    def close(self) -> None:
        self.compile_seconds.clear()


RUNTIMES.register("torch-compile")(TorchCompileSession)
