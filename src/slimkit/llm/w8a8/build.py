"""The int8 generation folder from the (smoothed) fp32 one: the decoder's MatMuls made W8A8
(per-token graph, :mod:`slimkit.llm.w8a8.onnx_int8`, or ONNX Runtime's ``quantize_dynamic`` for
per-tensor activations), optionally an int8 KV cache, the weights in one external data file,
the other files (GenAI config, tokenizer) copied; and the proof that ONNX Runtime's optimised
graph runs integer kernels for every int8 layer."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimkit._deps import require
from slimkit.errors import VerificationError
from slimkit.llm.w8a8.onnx_int8 import (
    INTEGER_KERNELS,
    Int8Graph,
    layer_name,
    optimized_op_types,
    quantize_matmuls,
    weight_matmuls,
)
from slimkit.quantize.calibration import quiet

log = logging.getLogger(__name__)
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"


@dataclass(frozen=True)
class BuildPlan:
    activations: str  # token or tensor
    keep_float: Callable[[str], bool]  # layer name -> stays float
    qmax: int  # 127, or 63 (7-bit weights) on x86 without VNNI
    kv_scales: dict[str, Any] | None = None  # from slimkit.llm.w8a8.kv, for an int8 cache
    int8_head: bool = True  # the LM head as weight-only int8 (MatMulNBits)


def build_int8_folder(fp32: Path, out: Path, plan: BuildPlan) -> dict[str, Any]:
    """Write the int8 folder ``out`` from the generation folder ``fp32``; what was done."""
    onnx = require("onnx", "writing the int8 graph")
    out.mkdir(parents=True)
    for item in fp32.iterdir():
        if item.is_file() and item.suffix not in (".onnx", ".data") \
                and not item.name.startswith("slimkit_"):
            shutil.copy2(item, out / item.name)
    proto = onnx.load(str(fp32 / MODEL_FILE))
    if plan.activations == "tensor":
        graph = _ort_dynamic(proto, fp32, out, plan)
        proto = onnx.load(str(out / MODEL_FILE))
    else:
        graph = quantize_matmuls(proto, plan.keep_float, plan.qmax)
    head = _int8_head(proto) if plan.int8_head else {"precision": "float"}
    kv: dict[str, Any] = {"dtype": "float32"}
    if plan.kv_scales is not None:
        from slimkit.llm.w8a8.kv import apply_int8_cache

        kv = apply_int8_cache(proto, plan.kv_scales)
    for stale in (out / MODEL_FILE, out / DATA_FILE):
        stale.unlink(missing_ok=True)
    onnx.save(proto, str(out / MODEL_FILE), save_as_external_data=True,
              location=DATA_FILE, size_threshold=1024)
    (out / DATA_FILE).chmod(0o644)
    ops = optimized_op_types(out / MODEL_FILE, out.parent)
    for scratch in ("optimized.onnx", "optimized.onnx.data"):
        (out.parent / scratch).unlink(missing_ok=True)
    return {"layers": _layers(graph, plan), "lm_head": head, "kv_cache": kv,
            "optimized_op_types": ops,
            "integer_kernels": _prove_integer(ops, len(graph.quantized), plan.int8_head),
            "size_mb": round(sum(f.stat().st_size for f in out.iterdir()) / 1e6, 1)}


def _int8_head(proto: Any) -> dict[str, Any]:
    """The LM head as ONNX Runtime's weight-only int8 (MatMulNBits, symmetric, block 32,
    accuracy level 4: its input quantized per block of 32 and an int8 dot product), in place.
    The float table stays for the tied embeddings' Gather."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    heads = [n.name for n in proto.graph.node
             if n.op_type == "MatMul" and layer_name(n.name) == "lm_head"]
    if not heads:
        return {"precision": "float", "reason": "no MatMul named lm_head in the graph"}
    quantizer = MatMulNBitsQuantizer(proto, bits=8, block_size=32, is_symmetric=True,
                                     accuracy_level=4, nodes_to_include=heads)
    with quiet():
        quantizer.process()
    if quantizer.model.model is not proto:
        proto.CopyFrom(quantizer.model.model)
    return {"precision": "int8 weight-only (MatMulNBits, block 32, accuracy level 4)"}


def _layers(graph: Int8Graph, plan: BuildPlan) -> dict[str, Any]:
    weights = "s8 per output channel" + (" (7-bit range: this CPU has no VNNI, the AVX2 "
                                         "kernel's 16-bit sums would saturate)"
                                         if plan.qmax < 127 else "")
    activations = {"token": "u8 per token (zero point 128), quantized at run time",
                   "tensor": "u8 per tensor with a zero point, quantized at run time "
                             "(ONNX Runtime quantize_dynamic)"}[plan.activations]
    kept = [n for n in graph.kept_float if not (n == "lm_head" and plan.int8_head)]
    return {"int8": len(graph.quantized), "kept_float": kept,
            "activation_quantizations": graph.activation_groups, "weights": weights,
            "activations": activations}


def _prove_integer(ops: dict[str, int], expected: int, head: bool) -> dict[str, Any]:
    """The int8 layers must appear as fused integer kernels in the optimised graph."""
    found = sum(ops.get(op, 0) for op in INTEGER_KERNELS)
    if found < expected or (head and not ops.get("MatMulNBits")):
        raise VerificationError(
            f"ONNX Runtime's optimised graph runs {found} integer MatMul kernels for "
            f"{expected} int8 layers (op types {ops}); the int8 model would not be faster, "
            "so it is not written")
    return {"int8_layers": expected, "integer_kernels_in_optimised_graph": found,
            "kernel": sorted(op for op in INTEGER_KERNELS if ops.get(op)),
            "lm_head_kernel": "MatMulNBits" if head else None}


def _ort_dynamic(proto: Any, fp32: Path, out: Path, plan: BuildPlan) -> Int8Graph:
    """Per-tensor activations: ONNX Runtime's own ``quantize_dynamic`` (the library's path,
    kept for comparison; see :mod:`slimkit.llm.w8a8.onnx_int8` for why per token is the
    default)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = weight_matmuls(proto)
    kept = [n.name for n in nodes if plan.keep_float(layer_name(n.name))]
    with quiet():
        quantize_dynamic(fp32 / MODEL_FILE, out / MODEL_FILE, op_types_to_quantize=["MatMul"],
                         per_channel=True, reduce_range=plan.qmax < 127,
                         weight_type=QuantType.QInt8, nodes_to_exclude=kept,
                         use_external_data_format=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT,
                                        "MatMulConstBOnly": True})
    quantized = [layer_name(n.name) for n in nodes if n.name not in kept]
    return Int8Graph(tuple(quantized), tuple(layer_name(k) for k in kept), len(quantized))

