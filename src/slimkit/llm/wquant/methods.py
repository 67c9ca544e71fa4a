"""One handler per method, found by name: each turns one group's stacked weight ``(N, K)`` (and
the statistics of its inputs, for the methods that calibrate) into a :class:`QuantizedWeight`
and a short note for the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from slimkit.errors import InputError
from slimkit.llm.wquant.awq import Grid, search_clip
from slimkit.llm.wquant.calibrate import GroupStats
from slimkit.llm.wquant.config import AdvancedWeightQuantConfig
from slimkit.llm.wquant.gguf import encode_gguf
from slimkit.llm.wquant.gptq import gptq_quantize
from slimkit.llm.wquant.grid import QuantizedWeight
from slimkit.llm.wquant.hqq import hqq_quantize
from slimkit.registry import Registry


@dataclass(frozen=True)
class Job:
    """What one group's quantization needs besides its weight."""

    name: str
    grid: Grid
    stats: GroupStats | None
    advanced: AdvancedWeightQuantConfig


Quantizer = Callable[[torch.Tensor, Job], tuple[QuantizedWeight, str]]
QUANTIZERS: Registry[Quantizer] = Registry("weight quantization method")


@QUANTIZERS.register("rtn")
def rtn(w: torch.Tensor, job: Job) -> tuple[QuantizedWeight, str]:
    """ONNX Runtime's own round-to-nearest block quantizer (its C++ kernel), unpacked."""
    return ort_rtn(w, job.grid), "round to nearest (ONNX Runtime's quantizer)"


def ort_rtn(w: torch.Tensor, grid: Grid) -> QuantizedWeight:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    quantizer = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(
        block_size=grid.block, is_symmetric=grid.symmetric, bits=grid.bits))
    packed, scales, zeros = quantizer.qbits_block_quant(np.ascontiguousarray(w.float().numpy().T))
    return unpack(packed, scales, None if grid.symmetric else zeros, grid, w.shape[1])


def unpack(packed: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, grid: Grid,
           k: int) -> QuantizedWeight:
    """MatMulNBits' packed tensors back into codes (the inverse of ``grid.pack``)."""
    n, blocks = packed.shape[0], scales.reshape(packed.shape[0], -1).shape[1]
    codes = torch.from_numpy(packed.astype(np.uint8))
    zero = None if zeros is None else torch.from_numpy(zeros.astype(np.uint8).reshape(n, -1))
    if grid.bits == 4:
        codes = torch.stack([codes & 15, codes >> 4], -1).reshape(n, blocks, grid.block)
        if zero is not None:
            zero = torch.stack([zero & 15, zero >> 4], -1).reshape(n, -1)[:, :blocks]
    return QuantizedWeight(codes.reshape(n, blocks, grid.block).to(torch.uint8),
                           torch.from_numpy(scales.reshape(n, blocks).astype(np.float32)),
                           None if zero is None else zero.float(), grid.bits, grid.block, k)


@QUANTIZERS.register("gptq")
def gptq(w: torch.Tensor, job: Job) -> tuple[QuantizedWeight, str]:
    stats = _stats(job)
    q = gptq_quantize(w, stats.hessian, job.grid.bits, job.grid.block, job.grid.symmetric,
                      job.advanced.gptq_damp, job.advanced.gptq_act_order)
    return q, f"GPTQ on {stats.tokens} calibration tokens"


@QUANTIZERS.register("awq")
def awq(w: torch.Tensor, job: Job) -> tuple[QuantizedWeight, str]:
    """Round to nearest after the clipping search (the scales were folded layer-wide before)."""
    if not job.advanced.awq_clip:
        return ort_rtn(w, job.grid), "AWQ scales, round to nearest"
    clipped = search_clip(w.float(), _stats(job).sample(), job.grid)
    return ort_rtn(clipped, job.grid), "AWQ scales + clipping search"


@QUANTIZERS.register("hqq")
def hqq(w: torch.Tensor, job: Job) -> tuple[QuantizedWeight, str]:
    float_zero = job.advanced.float_zero_points
    q = hqq_quantize(w, job.grid.bits, job.grid.block, job.advanced.hqq_iterations, float_zero)
    return q, "HQQ (float zero points)" if float_zero else "HQQ, integer zero points"


@QUANTIZERS.register("gguf")
def gguf(w: torch.Tensor, job: Job) -> tuple[QuantizedWeight, str]:
    return encode_gguf(w, job.name, job.grid.bits, job.advanced.float_zero_points)


def _stats(job: Job) -> GroupStats:
    if job.stats is None:
        raise InputError(f"'{job.name}' has no calibration statistics")
    return job.stats
