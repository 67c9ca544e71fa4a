"""ONNX Runtime: CPU execution provider always; CUDA, TensorRT and OpenVINO when this build of
ONNX Runtime offers them (checked at run time), fp16 on the GPU providers.

A torch model is exported (and verified) to a temporary ONNX file first. The graph optimisation
level and the execution mode come from :class:`RuntimeOptions`; ``optimized_model_path`` saves
the optimised graph, which then opens without optimising again.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slimkit._deps import require
from slimkit.errors import DataError, InputError, RuntimeUnavailableError
from slimkit.model import Model
from slimkit.runtime.base import RUNTIMES, GraphOptimization, Precision, RuntimeOptions

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
          "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}


def available_providers() -> list[str]:
    """The short names of the execution providers this ONNX Runtime build offers.

    Example:
        >>> "cpu" in available_providers()
        True
    """
    ort = require("onnxruntime", "ONNX Runtime")
    offered = set(ort.get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in offered]


def check_provider(name: str) -> str:
    """The full ONNX Runtime name of provider ``name``, or an error listing those available."""
    full = PROVIDERS.get(name)
    if full is None or name not in available_providers():
        known = "" if full else f" (known providers: {', '.join(PROVIDERS)})"
        raise RuntimeUnavailableError(
            f"execution provider '{name}' is not available here{known}; available: "
            f"{', '.join(available_providers())}. GPU providers need the onnxruntime-gpu "
            "package and a GPU")
    return full


def session_options(options: RuntimeOptions) -> Any:
    ort = require("onnxruntime", "ONNX Runtime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = options.inter_op_threads
    so.execution_mode = getattr(ort.ExecutionMode, MODES[options.execution_mode.value])
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                          LEVELS[GraphOptimization(options.graph_optimization).value])
    so.log_severity_level = 3
    if options.optimized_model_path is not None:
        so.optimized_model_filepath = str(options.optimized_model_path)
    return so


def provider_list(options: RuntimeOptions) -> list[Any]:
    """The providers (with their options) a session is opened with; CPU is the fallback."""
    full = check_provider(options.provider)
    if full == PROVIDERS["cpu"]:
        return [full]
    settings: dict[str, Any] = {"device_id": 0}
    if options.provider == "tensorrt" and options.precision is Precision.FP16:
        settings["trt_fp16_enable"] = True
    return [(full, settings), PROVIDERS["cpu"]]


def to_fp16(path: Path, folder: Path) -> Path:
    """An fp16 copy of the ONNX model at ``path`` (inputs and outputs stay fp32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    out = folder / f"{path.stem}-fp16.onnx"
    onnx.save(model, str(out))
    return out


class OrtSession:
    runtime = "onnxruntime"
    takes_onnx = True  # a torch model is exported first (slimkit.export.sessions)

    def __init__(self, model: Model, options: RuntimeOptions) -> None:
        ort = require("onnxruntime", "ONNX Runtime")
        self.options = options
        self.model = model
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        providers = provider_list(options)  # an unknown provider fails fast
        if model.onnx_path is None:
            raise InputError(f"the onnxruntime runtime runs ONNX files; '{model.name}' is a torch "
                             "model: export it first (slimkit.export_onnx), or open it with "
                             "slimkit.export.sessions.session_for")
        path = Path(model.onnx_path)
        if options.precision is Precision.FP16 and options.provider == "cuda":
            path = to_fp16(path, self._folder())
        try:
            self.session = ort.InferenceSession(str(path), session_options(options),
                                                providers=providers)
        except Exception:
            self.close()
            raise
        self.path = path

    def _folder(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="slimkit-ort-")
        return Path(self._tmp.name)

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
