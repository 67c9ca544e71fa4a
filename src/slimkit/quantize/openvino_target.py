"""int8 for OpenVINO: NNCF's post-training quantization (the best tool for this runtime: it
knows which OpenVINO patterns fuse into integer kernels, and adds SmoothQuant and bias
correction for transformers), wrapped in what slimkit adds everywhere: calibration checks,
fidelity measured against the float model, proof from OpenVINO's compiled (runtime) model that
the layers run in int8, the inference precision of the remaining float ops chosen by
measurement (f32, or bf16 where the CPU has it), and the IR written atomically with a report.

OpenVINO and NNCF are an optional extra: ``pip install 'slimkit[openvino]'``.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from slimkit._deps import require
from slimkit.data import Dataset, synthetic
from slimkit.errors import InputError
from slimkit.model import Model
from slimkit.quantize.config import QuantizeConfig, QuantMode

# compute ops of OpenVINO's runtime model whose precision tells whether int8 kernels ran
GEMM_LAYERS = ("FullyConnected", "Convolution", "MatMul", "GroupConvolution", "Subgraph",
               "FullyConnectedQuantizedLegacy", "ConvolutionBackpropData")
INT_PRECISIONS = ("i8", "u8")
BF16_KEEP = 0.0005  # bf16 is kept for the float ops when fidelity drops by less than this


def openvino_proof(compiled: Any) -> dict[str, Any]:
    """Integer vs float compute layers of a compiled model (its exec graph)."""
    from slimkit.runtime.openvino import exec_precisions

    counts = exec_precisions(compiled)
    integer = {op: sum(n for p, n in c.items() if p in INT_PRECISIONS)
               for op, c in counts.items() if op in GEMM_LAYERS}
    floats = {op: sum(n for p, n in c.items() if p not in INT_PRECISIONS)
              for op, c in counts.items() if op in GEMM_LAYERS}
    integer = {k: v for k, v in integer.items() if v}
    floats = {k: v for k, v in floats.items() if v}
    return {"ok": bool(integer), "integer_layers": integer, "float_layers": floats,
            "source": "OpenVINO runtime model: runtimePrecision of each executed layer"}


def quantize_openvino(model: Model, output: str | Path, config: QuantizeConfig | None = None,
                      calib: Dataset | None = None, eval_data: Dataset | None = None,
                      threads: int = 1) -> dict[str, Any]:
    """Quantize ``model`` to int8 OpenVINO IR at ``output`` (``.xml``), verified; the report.

    Example:
        >>> import tempfile, pathlib
        >>> from slimkit import load_model, load_data
        >>> m = load_model("builtin:digits-cnn")
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "q.xml"
        >>> quantize_openvino(m, out, calib=load_data("builtin:digits:train", m))["proof"]["ok"]
        ... # doctest: +SKIP
        True
    """
    from slimkit.export.openvino import save_ir
    from slimkit.io import check_output_path

    ov = require("openvino", "int8 for OpenVINO")
    nncf = require("nncf", "int8 for OpenVINO")
    config = config or QuantizeConfig(mode=QuantMode.STATIC)
    if not str(output).endswith(".xml"):
        raise InputError(f"OpenVINO IR path '{output}' must end with .xml")
    check_output_path(output)
    calib_data = _calibration(model, calib or eval_data, config.calibration_size)
    data = eval_data or calib_data
    with tempfile.TemporaryDirectory(prefix="slimkit-ovq-") as tmp_name:
        float_model = _float_onnx(model, Path(tmp_name))
        transformer = model.meta.get("num_attention_heads") is not None
        items = _items(calib_data, model.input_names)
        quantized = nncf.quantize(
            ov.convert_model(str(float_model.onnx_path)), nncf.Dataset(items),
            subset_size=len(items),
            model_type=nncf.ModelType.TRANSFORMER if transformer else None)
        staged = Path(tmp_name) / "int8.xml"
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        report = _verify(model, float_model, float_model.with_onnx(staged), data, threads)
        report["method"] = {"tool": f"NNCF {_version('nncf')} post-training quantization",
                            "model_type": "transformer" if transformer else "default",
                            "calibration_examples": len(items)}
        float_bytes = Path(float_model.onnx_path or "").stat().st_size
        out = save_ir(ov.Core().read_model(str(staged)), Path(output))
    report["path"] = str(out)
    report["size"] = {"float_bytes": float_bytes,
                      "quantized_bytes": out.with_suffix(".bin").stat().st_size}
    return report


def _verify(model: Model, float_model: Model, quant: Model, data: Dataset,
            threads: int) -> dict[str, Any]:
    """Fidelity at f32 and at bf16 (where the CPU has it), integer-kernel proof, and the
    precision to deploy with."""
    from slimkit.evaluate import embedding_fidelity, output_fidelity
    from slimkit.runtime.base import Precision, RuntimeOptions
    from slimkit.runtime.openvino import compile_model, has_bf16

    reference = _predict(float_model, data, "onnxruntime", Precision.FP32)
    fidelity: dict[str, dict[str, float]] = {}
    precisions = [Precision.FP32] + ([Precision.BF16] if has_bf16() else [])
    for precision in precisions:
        got = _predict(quant, data, "openvino", precision)
        fid = output_fidelity(reference, got)
        if got.ndim == 2 and got.shape[1] > 16 and len(got) > 5:
            fid.update(embedding_fidelity(reference, got))
        fidelity[precision.value] = fid
    compiled = compile_model(Path(quant.onnx_path or ""), RuntimeOptions(threads=threads))
    chosen = Precision.FP32
    if Precision.BF16.value in fidelity and _key(fidelity["fp32"]) - \
            _key(fidelity["bf16"]) < BF16_KEEP:
        chosen = Precision.BF16
    return {"fidelity": fidelity, "proof": openvino_proof(compiled),
            "precision": {"chosen": chosen.value,
                          "why": "bf16 for the float ops kept fidelity within "
                                 f"{BF16_KEEP}" if chosen is Precision.BF16 else
                                 "f32: no bf16 on this CPU, or bf16 cost fidelity"}}


def _key(fid: dict[str, float]) -> float:
    return fid.get("cosine_mean", 1.0 - fid.get("max_abs_error", 0.0))


def _predict(model: Model, data: Dataset, runtime: str, precision: Any) -> np.ndarray:
    from slimkit.quantize.act_stats import examples
    from slimkit.runtime import RuntimeOptions, open_session

    outs = []
    with open_session(model, runtime, RuntimeOptions(precision=precision)) as session:
        for item in examples(data, model.input_names):
            outs.append(session.run(item)[0])
    return np.concatenate(outs)


def _calibration(model: Model, data: Dataset | None, size: int) -> Dataset:
    from slimkit.quantize.act_stats import check_token_lengths

    if data is None:
        return synthetic(model.inputs, min(size, 32), seed=0)
    check_token_lengths(data, model.input_names)
    return data.take(size)


def _items(data: Dataset, input_names: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    from slimkit.quantize.act_stats import examples

    return list(examples(data, input_names))


def _float_onnx(model: Model, folder: Path) -> Model:
    if model.onnx_path is not None:
        return model
    from slimkit.export.onnx import export_onnx

    exported = export_onnx(model, folder / "float.onnx").model
    return replace(exported, name=f"{model.name}-fp32")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
