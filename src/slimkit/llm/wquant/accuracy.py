"""MatMulNBits' ``accuracy_level`` chosen for this CPU by measurement.

Level 1 computes in fp32 (weights dequantized block by block); level 4 quantizes the
activations to int8 per block and runs integer dot products. On x86 with VNNI level 4 is the
fast path (Zen 4: int4 block 32 about 2.5x fp32 at batch 1, level 1 slower than fp32; int8
weights at level 1 take a dequantize-every-call path, ~100x slower), on other CPUs it may not
be, so slimkit times both on the model's own MatMul shape, for one decode step and one prefill,
and weighs them as a generation does (``decode_steps`` steps per prefill).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

LEVELS = (1, 4)


def pick_level(times: dict[int, dict[str, float]], decode_steps: int = 64) -> int:
    """The level with the least ``decode_steps * decode + prefill`` seconds.

    Example:
        >>> pick_level({1: {"decode": 2.0, "prefill": 50.0}, 4: {"decode": 1.0, "prefill": 60.0}})
        4
    """
    def cost(level: int) -> float:
        return decode_steps * times[level]["decode"] + times[level]["prefill"]

    return min(sorted(times), key=cost)


def measure_levels(k: int, n: int, bits: int, block: int, symmetric: bool, prompt: int,
                   threads: int | None, rounds: int = 20) -> dict[int, dict[str, float]]:
    """Median seconds of a ``(1, k) x (k, n)`` and a ``(prompt, k) x (k, n)`` MatMulNBits at
    each level, interleaved, on ``threads`` intra-op threads."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    sessions = {level: _session(weight, bits, block, symmetric, level, threads)
                for level in LEVELS}
    inputs = {"decode": rng.standard_normal((1, k)).astype(np.float32),
              "prefill": rng.standard_normal((prompt, k)).astype(np.float32)}
    samples: dict[int, dict[str, list[float]]] = {lv: {"decode": [], "prefill": []}
                                                  for lv in LEVELS}
    for phase, a in inputs.items():
        for session in sessions.values():
            session.run(None, {"A": a})
        for _ in range(rounds if phase == "decode" else max(3, rounds // 5)):
            for level, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {"A": a})
                samples[level][phase].append(time.perf_counter() - start)
    return {lv: {ph: float(np.median(v)) for ph, v in s.items()} for lv, s in samples.items()}


def _session(weight: np.ndarray, bits: int, block: int, symmetric: bool, level: int,
             threads: int | None) -> Any:
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    from slimkit.llm.runtime import ort_options
    from slimkit.llm.wquant.grid import quantize_rtn
    from slimkit.llm.wquant.nbits import matmul_nbits

    k, n = weight.shape
    q = quantize_rtn(torch.from_numpy(weight.T.copy()), bits, block, symmetric)
    node, inits = matmul_nbits(helper.make_node("MatMul", ["A", "W"], ["Y"], name="probe"), q,
                               "W", level)
    graph = helper.make_graph([node], "probe",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return ort.InferenceSession(model.SerializeToString(), ort_options(threads),
                                providers=["CPUExecutionProvider"])
