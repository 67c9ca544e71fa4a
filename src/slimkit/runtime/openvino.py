"""OpenVINO runtime (CPU): reads an ONNX file or an OpenVINO IR (``.xml`` + ``.bin``), with the
thread count pinned, the latency hint and the inference precision set explicitly.

OpenVINO picks bf16 by default on CPUs that have it (AVX-512 BF16 or AMX), even for an fp32
model, so an "fp32" row would silently be bf16 (ANCHORS.md): ``INFERENCE_PRECISION_HINT`` is
always set, to ``f32`` unless ``RuntimeOptions.precision`` asks for ``bf16``. Quantized models
(QDQ ONNX from slimkit/ONNX Runtime, or NNCF's IR) run their int8 layers in integer kernels;
:func:`exec_precisions` reads which precision each op ran in from the compiled model.

OpenVINO is an optional extra: ``pip install 'slimkit[openvino]'``.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slimkit._deps import require
from slimkit.errors import DataError, InputError, RuntimeUnavailableError
from slimkit.hardware import cpu_info
from slimkit.model import Model
from slimkit.runtime.base import RUNTIMES, Precision, RuntimeOptions

PURPOSE = "the OpenVINO runtime"
PRECISION_HINTS = {Precision.FP32: "f32", Precision.BF16: "bf16"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def has_bf16(cpu: dict[str, Any] | None = None) -> bool:
    """Whether the CPU has bf16 arithmetic OpenVINO uses (AVX-512 BF16 or AMX).

    Example:
        >>> has_bf16({"simd": ["avx2", "avx512_bf16"]}), has_bf16({"simd": ["avx2"]})
        (True, False)
    """
    return bool(set((cpu or cpu_info())["simd"]) & set(BF16_FLAGS))


def compile_config(options: RuntimeOptions) -> dict[str, str]:
    """The OpenVINO CPU plugin properties for ``options`` (all explicit, nothing left default).

    Example:
        >>> compile_config(RuntimeOptions(threads=2))["INFERENCE_PRECISION_HINT"]
        'f32'
    """
    hint = PRECISION_HINTS.get(options.precision)
    if hint is None:
        raise RuntimeUnavailableError(
            f"precision {options.precision.value} is not a CPU precision of OpenVINO; use fp32 "
            "or bf16 (on a CPU with AVX-512 BF16 or AMX)")
    return {"INFERENCE_NUM_THREADS": str(options.threads), "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint,
            "ENABLE_CPU_PINNING": "YES"}


def compile_model(path: Path, options: RuntimeOptions) -> Any:
    """``path`` (ONNX or IR) compiled for the CPU with :func:`compile_config`."""
    ov = require("openvino", PURPOSE)
    if options.provider != "cpu":
        raise RuntimeUnavailableError(f"the openvino runtime runs on the CPU here; provider "
                                      f"'{options.provider}' is not available to it")
    if options.precision is Precision.BF16 and not has_bf16():
        raise RuntimeUnavailableError(
            "bf16 needs a CPU with AVX-512 BF16 or AMX, which this one lacks (OpenVINO would "
            "run f32 anyway): use precision fp32, or int8 quantization for speed")
    core = ov.Core()
    try:
        source = core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError with C++ frames in the text
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(f"OpenVINO cannot read '{path}': {first}") from None
    return core.compile_model(source, "CPU", compile_config(options))


def exec_precisions(compiled: Any) -> dict[str, Counter[str]]:
    """Per op type of the compiled (runtime) model, how many ran in each precision, from the
    exec graph's ``runtimePrecision`` (e.g. ``{"FullyConnected": {"i8": 24}}``)."""
    counts: dict[str, Counter[str]] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        precision = (info["runtimePrecision"].astype(str) if "runtimePrecision" in info
                     else "?")
        counts.setdefault(layer, Counter())[precision.lower()] += 1
    return counts


class OpenVinoSession:
    runtime = "openvino"
    takes_onnx = True  # a torch model is exported first (slimkit.export.sessions)

    def __init__(self, model: Model, options: RuntimeOptions) -> None:
        self.options, self.model = options, model
        if model.onnx_path is None:
            raise InputError(f"the openvino runtime runs ONNX or IR files; '{model.name}' is a "
                             "torch model: export it first (slimkit.export_onnx), or open it "
                             "with slimkit.export.sessions.session_for")
        path = Path(model.onnx_path)
        self.compiled = compile_model(path, options)
        self.request = self.compiled.create_infer_request()
        self.path = path

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            self.request.infer(inputs)
        except Exception as exc:  # OpenVINO raises RuntimeError/TypeError from its C++ core
            shapes = {k: tuple(v.shape) for k, v in inputs.items()}
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
            raise DataError(f"inputs {shapes} do not fit model '{self.model.name}' in "
                            f"OpenVINO: {first}") from None
        return [np.array(self.request.get_output_tensor(i).data)
                for i in range(len(self.compiled.outputs))]

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        yield  # OpenVINO's thread count is fixed when the model is compiled

    def close(self) -> None:
        self.request = None  # OpenVINO frees the compiled model with its last reference


RUNTIMES.register("openvino")(OpenVinoSession)
