"""ONNX Runtime: CPU execution provider always; CUDA, TensorRT and OpenVINO when installed.

A torch model is exported (and verified) to a temporary ONNX file first.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slimkit._deps import require
from slimkit.errors import DataError, RuntimeUnavailableError
from slimkit.model import Model
from slimkit.runtime.base import RUNTIMES, RuntimeOptions

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
          "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def available_providers() -> list[str]:
    """The short names of the execution providers this ONNX Runtime build offers."""
    ort = require("onnxruntime", "ONNX Runtime")
    offered = set(ort.get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in offered]


def session_options(options: RuntimeOptions) -> Any:
    ort = require("onnxruntime", "ONNX Runtime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                          LEVELS[options.graph_optimization])
    so.log_severity_level = 3
    if options.optimized_model_path is not None:
        so.optimized_model_filepath = str(options.optimized_model_path)
    return so


class OrtSession:
    runtime = "onnxruntime"

    def __init__(self, model: Model, options: RuntimeOptions) -> None:
        ort = require("onnxruntime", "ONNX Runtime")
        self.options = options
        self.model = model
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        path = model.onnx_path or self._export(model)
        provider = PROVIDERS.get(options.provider)
        if provider is None or options.provider not in available_providers():
            raise RuntimeUnavailableError(
                f"execution provider '{options.provider}' is not available here; "
                f"available: {', '.join(available_providers())}"
            )
        providers = [provider] + (["CPUExecutionProvider"] if provider != PROVIDERS["cpu"] else [])
        self.session = ort.InferenceSession(str(path), session_options(options),
                                            providers=providers)
        self.path = Path(path)

    def _export(self, model: Model) -> Path:
        from slimkit.export.onnx import export_onnx

        self._tmp = tempfile.TemporaryDirectory(prefix="slimkit-ort-")
        return export_onnx(model, Path(self._tmp.name) / f"{model.name}.onnx").path

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return list(self.session.run(None, inputs))
        except Exception as exc:  # ORT raises InvalidArgument/Fail from its C++ core
            shapes = {k: tuple(v.shape) for k, v in inputs.items()}
            first = str(exc).strip().splitlines()[0][:240]
            raise DataError(
                f"inputs {shapes} do not fit ONNX model '{self.model.name}': {first}"
            ) from None

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        yield  # ONNX Runtime's thread pool is fixed when the session is created

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


RUNTIMES.register("onnxruntime")(OrtSession)
