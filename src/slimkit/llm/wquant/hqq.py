"""HQQ (Badri & Shaji, 2023): calibration-free; each block's zero point is optimised by a
half-quadratic proximal solver so that the dequantized weights are close in an ``l_p`` norm
(p < 1: robust to the outlier weights that min-max rounding spends its range on).

**ONNX Runtime's HQQ** (``HQQWeightOnlyQuantConfig``) keeps the optimised zero points as
floats; MatMulNBits then takes a dequantize-every-call path on CPU, measured about 40x slower
than fp32 per MatMul on Zen 4 (int4 block 32, batch 1). Rounding HQQ's zero points back to
integer codes undoes its gain (the solver moves them by less than half a code: the result is
round-to-nearest again, measured on Gaussian and Student-t weights), so the integer variant
here runs HQQ's solver, rounds the zero point, then refits each block's scale by least squares
with the codes (a few alternations): 3-6% lower weight error than round to nearest in those
tests, against 6-11% for float zero points. ``float_zero_points`` uses ORT's solver unchanged.
"""

from __future__ import annotations

import torch

from slimkit.llm.wquant.grid import (
    QuantizedWeight,
    blocks,
    grid_params,
    round_half_away,
    zero_padding,
)

LP_NORM, BETA, KAPPA = 0.7, 10.0, 1.01  # HQQ's published defaults (ORT's too)
REFITS = 3


def shrink(x: torch.Tensor, beta: float, p: float = LP_NORM) -> torch.Tensor:
    """The generalised soft-threshold of the l_p proximal step."""
    return torch.sign(x) * torch.relu(x.abs() - (1.0 / beta) * (x.abs() + 1e-8).pow(p - 1))


def hqq_quantize(w: torch.Tensor, bits: int, block: int, iterations: int = 20,
                 float_zero: bool = False) -> QuantizedWeight:
    """HQQ of ``w`` ``(N, K)``: asymmetric blocks, scales from the min-max range, zero points
    optimised (integers unless ``float_zero``).

    Example:
        >>> w = torch.randn(8, 64)
        >>> q = hqq_quantize(w, 4, 32)
        >>> bool(torch.equal(q.zero_points, q.zero_points.round()))
        True
    """
    if float_zero:
        return _ort_hqq(w, bits, block)
    top = float(2 ** bits - 1)
    wb = blocks(w.float(), block)
    scale, start = grid_params(wb, bits, False)
    zero = start if start is not None else torch.zeros_like(scale)  # asymmetric: never None
    scale, zero = scale[..., None], zero[..., None]
    zero = round_half_away(solve_zero(wb, scale, zero, top, iterations)).clamp(0, top)
    for _ in range(REFITS):
        scale = refit_scale(wb, scale, zero, top)
    codes = round_half_away(wb * _inverse(scale) + zero).clamp(0, top)
    return QuantizedWeight(zero_padding(codes, w.shape[1]), scale[..., 0], zero[..., 0], bits,
                           block, w.shape[1])


def _inverse(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale == 0, torch.zeros_like(scale), 1.0 / scale)


def solve_zero(wb: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, top: float,
               iterations: int) -> torch.Tensor:
    """HQQ's proximal solver for the (float) zero points of blocks ``wb`` ``(..., block)``."""
    inverse, beta, best, best_zero = _inverse(scale), BETA, float("inf"), zero
    for _ in range(iterations):
        q = round_half_away(wb * inverse + zero).clamp(0, top)
        restored = (q - zero) * scale
        error = float((wb - restored).abs().mean())
        if error >= best:
            break
        best, best_zero = error, zero
        residual = shrink(wb - restored, beta)
        zero = (q - (wb - residual) * inverse).mean(-1, keepdim=True)
        beta *= KAPPA
    return best_zero


def refit_scale(wb: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                top: float) -> torch.Tensor:
    """The least-squares scale of each block for its current codes around ``zero``."""
    levels = round_half_away(wb * _inverse(scale) + zero).clamp(0, top) - zero
    fitted = (levels * wb).sum(-1, keepdim=True) / (levels * levels).sum(-1, keepdim=True)
    return torch.where(torch.isfinite(fitted) & (fitted != 0), fitted, scale)


def _ort_hqq(w: torch.Tensor, bits: int, block: int) -> QuantizedWeight:
    """ONNX Runtime's HQQ solver as it is (float zero points), in MatMulNBits' terms."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        HQQWeightOnlyQuantConfig,
        HQQWeightOnlyQuantizer,
    )

    solver = HQQWeightOnlyQuantizer(HQQWeightOnlyQuantConfig(block_size=block, bits=bits))
    codes, scale, zero = solver.quantize_internal(w.float(), bits=bits, group_size=block)
    n = w.shape[0]
    return QuantizedWeight(codes.reshape(n, -1, block).to(torch.uint8),
                           scale.reshape(n, -1).float(), zero.reshape(n, -1).float(), bits,
                           block, w.shape[1], float_zero=True)
