"""ONNX graph facts quantization needs: which layers can be quantized, whether the weights are
finite, and, after quantizing, the proof that ONNX Runtime runs integer kernels."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import DataError
from slimkit.selector import Layer, module_path_of_onnx_node

# ops whose weights int8/int4 quantization targets
QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv", "Attention")
# weight-only kernels: int4/int8 weights dequantized into float compute (no integer GEMM)
WEIGHT_ONLY_OPS = frozenset({"MatMulNBits"})
# ops that show an integer kernel ran
INTEGER_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
    "QGemm", "QAttention", "MatMulIntegerToFloat", "QLinearAdd",
    "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearConcat", "QLinearMul",
    "QLinearAveragePool", "DynamicQuantizeLSTM", "QLinearLeakyRelu", "QLinearSoftmax",
})
# float compute ops: left after quantization they mean a layer did not get an integer kernel
FLOAT_COMPUTE_OPS = frozenset({"Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul",
                               "FusedGemm", "NchwcConv", "Attention", "MultiHeadAttention"})


def load_proto(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def quantizable_layers(proto: Any) -> list[Layer]:
    """Nodes with a constant weight that int8 quantization can replace by an integer kernel."""
    weights = {init.name for init in proto.graph.initializer}
    layers = []
    for node in proto.graph.node:
        if node.op_type in QUANTIZABLE_OPS and any(i in weights for i in node.input[1:2]):
            layers.append(Layer(node.name, node.op_type, module_path_of_onnx_node(node.name)))
    return layers


def check_finite_weights(proto: Any, source: str) -> None:
    from onnx import numpy_helper

    # NaN is never a weight; an infinity is, where it fills masks (-inf before a softmax),
    # so only the weights of the layers quantization rewrites must be finite
    weights = {name for node in proto.graph.node if node.op_type in ("Conv", "Gemm", "MatMul")
               for name in node.input}
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        bad = np.isnan(array).any() if init.name not in weights else not np.all(np.isfinite(array))
        if array.dtype.kind == "f" and bad:
            raise DataError(f"weight '{init.name}' of '{source}' holds NaN or Inf values; "
                            "quantization needs finite weights (check the training run)")


@dataclass
class KernelProof:
    """What ONNX Runtime's optimised graph runs: integer ops, float compute ops left, and float
    compute nodes fed by DequantizeLinear (a QDQ pattern ORT did not fuse: no integer kernel)."""

    op_counts: dict[str, int]
    integer_ops: int
    float_compute_ops: int
    unfused_qdq: list[str] = field(default_factory=list)
    weight_only_ops: int = 0  # e.g. MatMulNBits: quantized weights, float compute

    @property
    def ok(self) -> bool:
        """Integer kernels ran, and no quantized layer fell back to float or weight-only."""
        return self.integer_ops > 0 and not self.unfused_qdq and not self.weight_only_ops

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "integer_ops": self.integer_ops,
                "weight_only_ops": self.weight_only_ops,
                "float_compute_ops": self.float_compute_ops, "unfused_qdq": self.unfused_qdq[:20],
                "op_counts": self.op_counts}


def prove_integer_kernels(path: Path, threads: int = 1) -> KernelProof:
    """Load ``path`` in ONNX Runtime (all graph optimisations), save the optimised graph and
    count what it runs."""
    import onnx

    from slimkit._deps import require
    from slimkit.runtime.base import RuntimeOptions
    from slimkit.runtime.onnxrt import session_options

    ort = require("onnxruntime", "checking integer kernels")
    with tempfile.TemporaryDirectory(prefix="slimkit-proof-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        opts = session_options(RuntimeOptions(threads=threads, optimized_model_path=optimized))
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        proto = onnx.load(str(optimized), load_external_data=False)
    return kernel_proof(proto)


def kernel_proof(proto: Any) -> KernelProof:
    counts = Counter(node.op_type for node in proto.graph.node)
    producers = {out: node for node in proto.graph.node for out in node.output}
    unfused = [
        node.name or node.op_type for node in proto.graph.node
        if node.op_type in FLOAT_COMPUTE_OPS and any(
            producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
            for i in node.input[:2])
    ]
    return KernelProof(dict(counts.most_common()), sum(counts[o] for o in INTEGER_OPS),
                       sum(counts[o] for o in FLOAT_COMPUTE_OPS), unfused,
                       sum(counts[o] for o in WEIGHT_ONLY_OPS))


def gemm_to_matmul(proto: Any) -> int:
    """Rewrite ``Gemm(A, W, b)`` with constant W (alpha = beta = 1, A not transposed) as
    ``MatMul(A, W') + b`` in place; return how many were rewritten. ONNX Runtime's int4 weight
    quantizer (MatMulNBits) only takes MatMul, and the torch exporter writes Linear as Gemm."""
    from onnx import helper, numpy_helper

    inits = {init.name: init for init in proto.graph.initializer}
    nodes, rewritten = [], 0
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        name = f"{node.input[1]}_matmul"
        proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), name))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}_mm" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [mm_out],
                                      name=node.name.replace("Gemm", "MatMul") or None))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                          name=f"{node.name}_bias"))
        rewritten += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return rewritten
