"""Reproduce the block grid a GGUF file stored a weight on (llama.cpp's Q4_0, Q4_1, Q8_0, all in
blocks of 32 along the input dimension), found from the fp32 values themselves.

What MatMulNBits can hold (``w = (q - zero) * scale`` per block):

- Q4_0 (``d * (q - 8)``): exactly, 4-bit symmetric (it is ORT's symmetric grid);
- Q8_0 (``d * q``, ``|q| <= 127``): exactly, 8-bit with scale ``d``;
- Q4_1 (``m + d * q``, a float minimum): exactly only with a *float* zero point ``-m / d``,
  which ONNX Runtime's CPU kernel runs on a slow dequantize-every-call path; with an integer zero
  point (the fast path) ``m`` moves to the nearest multiple of ``d`` (up to half a step per
  block); in 8 bits the 16 levels sit on a 17x finer grid and ``m`` moves by at most ``d / 34``.
"""

from __future__ import annotations

import torch

from slimkit.errors import InputError
from slimkit.llm.wquant.grid import QuantizedWeight, blocks, from_params, quantize_rtn

BLOCK = 32
TOLERANCE = 1e-3  # of a step: the fp16 scales leave float rounding only


def _on_grid(codes: torch.Tensor, low: float, high: float) -> bool:
    return bool(((codes - codes.round()).abs() <= TOLERANCE).all()
                and codes.min() >= low - TOLERANCE and codes.max() <= high + TOLERANCE)


def detect(w: torch.Tensor) -> str | None:
    """``q8_0``, ``q4_0`` or ``q4_1`` if every block of 32 of ``w`` ``(N, K)`` lies on that
    grid, else None (the first that fits, in that order).

    Example:
        >>> detect(torch.arange(16.0).repeat(4).reshape(1, 64) * 0.5 - 3.0)  # 16 levels
        'q4_1'
    """
    if w.shape[1] % BLOCK:
        return None
    wb = blocks(w.float(), BLOCK)
    peak = wb.abs().amax(-1, keepdim=True)
    d8 = torch.where(peak == 0, torch.ones_like(peak), peak / 127)
    if _on_grid(wb / d8, -127, 127) and _levels(wb) > 16:
        return "q8_0"
    hi, lo = wb.amax(-1, keepdim=True), wb.amin(-1, keepdim=True)
    signed = torch.where(hi.abs() > lo.abs(), hi, lo)
    d0 = torch.where(signed == 0, torch.ones_like(signed), signed / -8)
    if _on_grid(wb / d0, -8, 7):
        return "q4_0"
    d1 = torch.where(hi == lo, torch.ones_like(hi), (hi - lo) / 15)
    if _on_grid((wb - lo) / d1, 0, 15):
        return "q4_1"
    return None


def _levels(wb: torch.Tensor) -> int:
    """The most distinct values any block has (over a sample of rows)."""
    rows = wb[:: max(1, wb.shape[0] // 64)]
    return max(int(torch.unique(b).numel()) for b in rows.reshape(-1, wb.shape[-1]))


def encode_gguf(w: torch.Tensor, name: str, bits: int, float_zero: bool) -> tuple[
        QuantizedWeight, str]:
    """``w``'s own GGUF grid in MatMulNBits terms and a word on how exact it is."""
    grid = detect(w)
    if grid is None:
        raise InputError(f"the weights of '{name}' are not on a GGUF Q4_0/Q4_1/Q8_0 grid of "
                         "blocks of 32 (was the model loaded from such a .gguf?); use method "
                         "rtn, gptq or awq")
    if grid == "q8_0":
        if bits == 4:
            raise InputError(f"'{name}' is stored as GGUF Q8_0, which 4 bits cannot hold; keep "
                             "it at int8")
        wb = blocks(w.float(), BLOCK)
        peak = wb.abs().amax(-1)
        return from_params(w, torch.where(peak == 0, 1.0, peak / 127), None, 8, BLOCK), \
            "q8_0 exact"
    if grid == "q4_0":
        return quantize_rtn(w, bits, BLOCK, True), "q4_0 exact"
    if bits == 8:
        return quantize_rtn(w, 8, BLOCK, False), "q4_1 on an 8-bit grid (minimum within d/34)"
    return _q4_1(w, float_zero), ("q4_1 exact (float zero points)" if float_zero else
                                  "q4_1, zero point rounded to the grid")


def _q4_1(w: torch.Tensor, float_zero: bool) -> QuantizedWeight:
    wb = blocks(w.float(), BLOCK)
    hi, lo = wb.amax(-1), wb.amin(-1)
    flat = hi == lo  # a constant block: one level, scale = the value itself
    scale = torch.where(flat, lo, (hi - lo) / 15)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.where(flat, torch.full_like(lo, -1.0), -lo / safe)
    if not float_zero:
        zero = zero.round().clamp(0, 15)
    return from_params(w, scale, zero, 4, BLOCK, float_zero=float_zero)
