"""The quantization methods, one handler per mode, found through a registry. Each wraps ONNX
Runtime's quantization tooling (it does the graph rewriting well) and adds what it lacks: the
activation type chosen for the CPU, the MSE calibration method, layer selection that fails on
typos, and op types restricted to the layers that have integer kernels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.data import Dataset
from slimkit.errors import DataError
from slimkit.quantize.calibration import DatasetReader, mse_ranges, quiet
from slimkit.quantize.config import CalibMethod, QuantizeConfig, QuantMode
from slimkit.registry import Registry


@dataclass(frozen=True)
class QuantJob:
    """One quantization run: the float ONNX file, where to write, and what to leave in float."""

    float_path: Path
    out_path: Path
    config: QuantizeConfig
    input_names: tuple[str, ...]
    exclude_nodes: tuple[str, ...]
    activation_type: str  # "u8" or "s8"
    calib: Dataset | None = None
    calibration_cache: Path | None = None  # ORT's range cache, reused when layers are reverted
    range_overrides: dict[str, tuple[float, float]] | None = None  # MSE ranges, computed once


Handler = Callable[[QuantJob], dict[str, Any]]
METHODS: Registry[Handler] = Registry("quantization mode")

# int8 op types that have integer kernels in ONNX Runtime's CPU provider. Dynamic mode leaves
# Conv in float: its ConvInteger kernel ran 2-3x slower than float Conv in the quantization
# benchmark (ResNet-18 0.44x, digits CNN 0.35x); static mode's QLinearConv is the CNN path.
# Gather with a constant table (embeddings) stores int8 rows, dequantized after the lookup: the
# file shrinks 4x there (MiniLM's 47 MB word embeddings) for no measurable time.
DYNAMIC_OP_TYPES = ["MatMul", "Gemm", "Attention", "Gather"]


def _qtype(kind: str) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QUInt8 if kind == "u8" else QuantType.QInt8


@METHODS.register(QuantMode.DYNAMIC.value)
def quantize_dynamic_job(job: QuantJob) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    with quiet():
        quantize_dynamic(
            job.float_path, job.out_path, op_types_to_quantize=DYNAMIC_OP_TYPES,
            per_channel=job.config.per_channel, weight_type=_qtype("s8"),
            nodes_to_exclude=list(job.exclude_nodes),
            # fused graphs carry contrib ops whose output types ORT cannot infer; they are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )
    return {"activations": "u8, quantized at run time per tensor", "weights": "s8"}


_ORT_METHODS = {CalibMethod.MINMAX: "MinMax", CalibMethod.PERCENTILE: "Percentile",
                CalibMethod.ENTROPY: "Entropy", CalibMethod.MSE: "MinMax"}


@METHODS.register(QuantMode.QAT.value)  # QAT's learned ranges arrive as range_overrides
@METHODS.register(QuantMode.STATIC.value)
def quantize_static_job(job: QuantJob) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    config = job.config
    calib = job.calib
    if calib is None:  # api.quantize checks calibration data before any handler runs
        raise DataError("static quantization needs calibration data: pass --calib DATA")
    ranges = job.range_overrides
    if config.method == CalibMethod.MSE and ranges is None:
        ranges = mse_ranges(job.float_path, calib, job.input_names)
    extra: dict[str, Any] = {
        "ActivationSymmetric": config.symmetric_activations,
        "WeightSymmetric": True,
        "CalibPercentile": config.percentile,
        "DefaultTensorType": onnx.TensorProto.FLOAT,
    }
    if ranges:
        # the model's outputs keep their full range: clipping logits ties the top classes
        outputs = {o.name for o in onnx.load(str(job.float_path), load_external_data=False)
                   .graph.output}
        ranges = {name: r for name, r in ranges.items() if name not in outputs}
        extra["TensorQuantOverrides"] = {
            name: [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}]
            for name, (lo, hi) in ranges.items()}
    from slimkit.quantize.guards import index_nodes, quantize_with_fallback

    def run(excluded: list[str]) -> None:
        with quiet():
            quantize_static(
                job.float_path, job.out_path, DatasetReader(calib, job.input_names),
                quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                activation_type=_qtype(job.activation_type), weight_type=_qtype("s8"),
                nodes_to_exclude=excluded,
                calibrate_method=getattr(CalibrationMethod, _ORT_METHODS[config.method]),
                extra_options=extra, calibration_cache_path=job.calibration_cache,
            )

    indices = index_nodes(job.float_path)
    refused = quantize_with_fallback(run, list(job.exclude_nodes) + indices, job.float_path)
    result: dict[str, Any] = {
        "activations": f"{job.activation_type}, calibrated ({config.method.value}) on "
                       f"{len(calib)} examples", "weights": "s8"}
    if indices:
        result["index_nodes_kept_float"] = len(indices)
    if refused:
        result["kept_float_by_onnxruntime"] = refused
    return result


@METHODS.register(QuantMode.INT4.value)
def quantize_int4_job(job: QuantJob) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from slimkit.errors import InputError
    from slimkit.quantize.graph import gemm_to_matmul

    proto = onnx.load(str(job.float_path))
    rewritten = gemm_to_matmul(proto)
    quantizer = MatMulNBitsQuantizer(
        proto, bits=4, block_size=job.config.block_size, is_symmetric=True,
        nodes_to_exclude=list(job.exclude_nodes), accuracy_level=4,
    )
    with quiet():
        quantizer.process()
    out = quantizer.model.model
    if not any(node.op_type == "MatMulNBits" for node in out.graph.node):
        raise InputError("int4 found no MatMul layer with a constant weight whose input "
                         "width fits its block size; use int8 (dynamic/static) for this model")
    onnx.save(out, str(job.out_path))
    return {"weights": f"int4, block size {job.config.block_size} (MatMulNBits)",
            "activations": "float", "gemm_rewritten_as_matmul": rewritten}


@METHODS.register(QuantMode.FP16.value)
def quantize_fp16_job(job: QuantJob) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(job.float_path))
    fp16 = convert_float_to_float16(model, keep_io_types=True,
                                    node_block_list=list(job.exclude_nodes))
    onnx.save(fp16, str(job.out_path))
    return {"weights": "fp16", "activations": "fp16 (inputs and outputs stay fp32)"}
