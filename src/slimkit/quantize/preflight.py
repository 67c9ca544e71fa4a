"""Speed preflight: before quantizing, say from measurement whether integer kernels will pay
on this CPU. Two measurements, both quick: the integer-vs-float GEMM ceiling of ONNX Runtime on
this machine (u8 x s8 and s8 x s8, since signed activations are many times slower on x86 CPUs
without VNNI), and the share of the float model's time spent in the ops quantization replaces.
Amdahl's law turns them into an expected speed-up."""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.hardware import cpu_info, has_int8_dot_product
from slimkit.quantize.config import ActivationType, QuantizeConfig, QuantMode

# ops whose time int8 quantization turns into integer time
INT8_COVERED = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Conv", "FusedConv", "NchwcConv",
                "Attention", "QAttention")
# dynamic mode quantizes no convolution (see methods.DYNAMIC_OP_TYPES)
DYNAMIC_COVERED = tuple(op for op in INT8_COVERED if "Conv" not in op)
PAYS_THRESHOLD = 1.1  # an expected gain below 10% is within the noise of a shared machine


@dataclass
class Preflight:
    mode: str
    cpu: str
    simd: list[str]
    int8_dot_product: bool
    activation_type: str
    gemm_ratio_u8s8: float  # integer / float GEMM throughput, measured here, 1 thread
    gemm_ratio_s8s8: float
    covered_share: float  # share of float kernel time in ops quantization replaces
    expected_speedup: float
    pays: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_activation_type(requested: ActivationType, cpu: dict[str, Any] | None = None,
                           ratios: tuple[float, float] | None = None) -> str:
    """The activation type of int8 GEMMs: as requested, else the faster of u8 x s8 and s8 x s8
    by the ratios measured on this CPU (``gemm_ratios``), else by architecture (u8 on x86,
    where u8 x s8 is the integer instruction with or without VNNI; s8 on Arm).

    Example:
        >>> choose_activation_type(ActivationType.AUTO, {"arch": "x86_64"}, ratios=(4.2, 0.27))
        'u8'
        >>> choose_activation_type(ActivationType.AUTO, {"arch": "aarch64"}, ratios=(0.9, 1.8))
        's8'
    """
    if requested != ActivationType.AUTO:
        return requested.value
    if ratios is not None and max(ratios) > 0 and abs(ratios[0] - ratios[1]) > 0.1:
        return "u8" if ratios[0] >= ratios[1] else "s8"
    arch = (cpu or cpu_info())["arch"].lower()
    return "s8" if arch in ("aarch64", "arm64") else "u8"


@functools.lru_cache(maxsize=1)
def gemm_ratios(m: int = 256, k: int = 512, n: int = 512, reps: int = 15) -> tuple[float, float]:
    """(u8s8, s8s8) integer GEMM throughput over fp32 MatMul in ONNX Runtime, one thread."""
    import onnxruntime as ort

    from slimkit.runtime.base import RuntimeOptions
    from slimkit.runtime.onnxrt import session_options

    rng = np.random.default_rng(0)
    graphs = {"f32": _gemm_graph("f32", k, n, rng), "u8": _gemm_graph("u8", k, n, rng),
              "s8": _gemm_graph("s8", k, n, rng)}
    inputs = {"f32": rng.standard_normal((m, k)).astype(np.float32),
              "u8": rng.integers(0, 255, (m, k)).astype(np.uint8),
              "s8": rng.integers(-127, 127, (m, k)).astype(np.int8)}
    opts = session_options(RuntimeOptions(threads=1))
    sessions = {key: ort.InferenceSession(g, opts, providers=["CPUExecutionProvider"])
                for key, g in graphs.items()}
    times: dict[str, list[float]] = {key: [] for key in graphs}
    for _ in range(reps):
        for key, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, {"a": inputs[key]})
            times[key].append(time.perf_counter() - start)
    med = {key: float(np.median(v[2:])) for key, v in times.items()}
    return med["f32"] / med["u8"], med["f32"] / med["s8"]


def _gemm_graph(kind: str, k: int, n: int, rng: np.random.Generator) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    if kind == "f32":
        b = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "b")
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        a_type, y_type, inits = TensorProto.FLOAT, TensorProto.FLOAT, [b]
    else:
        b = numpy_helper.from_array(rng.integers(-127, 127, (k, n)).astype(np.int8), "b")
        a_type = TensorProto.UINT8 if kind == "u8" else TensorProto.INT8
        a_zp = numpy_helper.from_array(np.array(0, np.uint8 if kind == "u8" else np.int8), "azp")
        b_zp = numpy_helper.from_array(np.array(0, np.int8), "bzp")
        node = helper.make_node("MatMulInteger", ["a", "b", "azp", "bzp"], ["y"])
        y_type, inits = TensorProto.INT32, [b, a_zp, b_zp]
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", a_type, None)],
                              [helper.make_tensor_value_info("y", y_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def run_preflight(float_onnx: Path, config: QuantizeConfig, model_inputs: Any,
                  threads: int = 1) -> Preflight:
    """Measure, then predict whether ``config`` will make ``float_onnx`` faster here."""
    from slimkit.analyse.profile import profile_ops
    from slimkit.load.onnx_file import load_onnx

    cpu = cpu_info()
    u8s8, s8s8 = gemm_ratios()
    act = choose_activation_type(config.activation_type, cpu, (u8s8, s8s8))
    model = load_onnx(float_onnx)
    if model_inputs is not None:
        model.inputs = model_inputs
    shares, _ = profile_ops(model, batch=1, sequence=128, threads=threads, runs=5)
    covered_ops = DYNAMIC_COVERED if config.mode == QuantMode.DYNAMIC else INT8_COVERED
    covered = sum(share for op, share in shares.items() if op in covered_ops)
    reasons: list[str] = []
    if config.mode in (QuantMode.DYNAMIC, QuantMode.STATIC, QuantMode.QAT):
        ceiling = u8s8 if act == "u8" else s8s8
        expected = 1.0 / ((1.0 - covered) + covered / ceiling)
        reasons.append(f"{act} activations x s8 weights: integer GEMM runs {ceiling:.2f}x "
                       f"fp32 here (measured); {covered:.0%} of the float time is in ops that "
                       f"quantization replaces")
        if act == "s8" and u8s8 > 1.5 * s8s8:
            reasons.append(f"s8 activations are {u8s8 / s8s8:.1f}x slower than u8 on this CPU: "
                           "use activation_type auto or u8")
        if not has_int8_dot_product(cpu):
            reasons.append("no VNNI/dot-product int8 instructions: integer GEMM takes AVX2's "
                           "u8 x s8 path, whose gain over fp32 varies by CPU (1.7-1.9x on Zen 3, "
                           "none on Zen 1): the measured ratio above is this CPU's")
        if config.mode == QuantMode.DYNAMIC:
            reasons.append("dynamic mode quantizes activations at run time (a small extra cost "
                           "per layer) and leaves convolutions in float; for CNNs use static")
        if config.mode != QuantMode.DYNAMIC and "Attention" in shares:
            reasons.append("static int8 on a fused transformer: ONNX Runtime has no QDQ kernel "
                           "for Attention and may run MatMuls weight-only; dynamic mode is the "
                           "integer path for transformer encoders")
    elif config.mode == QuantMode.INT4:
        expected = 1.0
        reasons.append("int4 weight-only shrinks MatMul weights 8x; on CPU it speeds up only "
                       "memory-bound MatMuls (batch-1 decoding of large models); compute-bound "
                       "encoders and CNNs gain no speed")
    else:
        expected = 0.5
        reasons.append("fp16 targets GPU execution providers; the CPU execution provider has "
                       "few fp16 kernels, so fp16 on CPU runs slower than fp32")
    return Preflight(config.mode.value, cpu["model"], cpu["simd"], has_int8_dot_product(cpu), act,
                     round(u8s8, 3), round(s8s8, 3), round(covered, 4), round(expected, 3),
                     expected >= PAYS_THRESHOLD, reasons)
