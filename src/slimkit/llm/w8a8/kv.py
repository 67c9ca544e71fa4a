"""An int8 KV cache through ONNX Runtime's GroupQueryAttention (``kv_cache_bit_width=8``,
static scales as inputs ``k_scale``/``v_scale``), which the CPU kernel of ONNX Runtime 1.32 runs.

Scales come from calibration: the fp32 graph's own ``present`` keys (after rotary, as the
operator stores them) and values over the calibration windows. Keys get one scale per channel
(kv head x head dim: key channels differ by orders of magnitude, the rotary pairs too). Values
get one scale for the whole layer, written as a per-channel tensor of equal entries: the kernel
requires the same quantization type for K and V, and with per-channel value scales ONNX Runtime
1.32's CPU kernel was *less* accurate than with one scale (synthetic GQA layer, 9/3 heads x 64:
relative output error 4.0% per-channel K and V, 1.5% per-channel K + uniform V, 2.6% per
tensor), which per-channel value quantization cannot be if applied as documented.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.progress import progress

QMAX = 127


def calibrate_kv(fp32_folder: Path, windows: Sequence[np.ndarray],
                 threads: int | None) -> dict[str, Any]:
    """Per layer: key scales ``(kv_heads, head_dim)`` and one value scale, from the fp32
    graph's cache after prefilling each calibration window."""
    from slimkit.llm.load import load_generation_folder
    from slimkit.llm.runtime import open_runtime

    runtime = open_runtime(load_generation_folder(fp32_folder), "onnxruntime", threads)
    keys: list[np.ndarray] = []
    values: list[float] = []
    for ids in progress(windows, "calibrating the KV cache", total=len(windows)):
        _, cache = runtime.prefill(np.asarray(ids).tolist())
        layer_k = [np.abs(t[0]).max(axis=1) for t in cache.layers[0::2]]
        layer_v = [float(np.abs(t).max()) for t in cache.layers[1::2]]
        keys = layer_k if not keys else [np.maximum(a, b) for a, b in zip(keys, layer_k,
                                                                          strict=True)]
        values = layer_v if not values else [max(a, b) for a, b in zip(values, layer_v,
                                                                       strict=True)]
    return {"key": [np.maximum(k, 1e-8) / QMAX for k in keys],
            "value": [max(v, 1e-8) / QMAX for v in values]}


def apply_int8_cache(proto: Any, scales: dict[str, Any]) -> dict[str, Any]:
    """Make every GroupQueryAttention of ``proto`` keep an int8 cache (in place): attributes,
    scale inputs, and the past/present graph inputs and outputs typed int8."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [n for n in proto.graph.node if n.op_type == "GroupQueryAttention"]
    for layer, node in enumerate(nodes):
        k = np.asarray(scales["key"][layer], np.float32)
        kv_heads, head_dim = k.shape
        v = np.full_like(k, scales["value"][layer])
        names = (f"w8a8/kv.{layer}.k_scale", f"w8a8/kv.{layer}.v_scale")
        proto.graph.initializer.extend([
            numpy_helper.from_array(k.reshape(1, kv_heads, 1, head_dim), names[0]),
            numpy_helper.from_array(v.reshape(1, kv_heads, 1, head_dim), names[1])])
        while len(node.input) < 12:
            node.input.append("")
        node.input.extend(names)
        node.attribute.extend([helper.make_attribute("k_quant_type", "PER_CHANNEL"),
                               helper.make_attribute("v_quant_type", "PER_CHANNEL"),
                               helper.make_attribute("kv_cache_bit_width", 8)])
    cache_names = {n for node in nodes for n in (node.input[3], node.input[4],
                                                 node.output[1], node.output[2])}
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.name in cache_names:
            value.type.tensor_type.elem_type = TensorProto.INT8
    per_token = 2 * len(nodes) * kv_heads * head_dim if nodes else 0
    return {"dtype": "int8", "layers": len(nodes),
            "scales": "keys per channel, values per layer (static, from calibration)",
            "bytes_per_token": per_token, "fp32_bytes_per_token": 4 * per_token}
