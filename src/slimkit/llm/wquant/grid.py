"""Block quantization grids of one weight matrix, in torch, in MatMulNBits' terms.

A weight ``w`` of shape ``(N, K)`` (output features x input features, PyTorch's ``Linear``
orientation) is cut along ``K`` into blocks of ``block`` values (the last one padded with zeros
when ``block`` does not divide ``K``: MatMulNBits' own layout). Each block has a scale and a zero
point; a value is stored as an unsigned code ``q`` in ``[0, 2**bits)`` and means
``(q - zero) * scale``.

The rules are ONNX Runtime's (``quantize_matmul_4bits``/``8bits``), reproduced bit for bit so
that GPTQ, AWQ and HQQ here search on the very grid ORT's round-to-nearest writes (tested):

- symmetric: ``scale = m / -2**(bits-1)`` where ``m`` is the block's value of largest
  magnitude (with its sign), zero point ``2**(bits-1)`` implicit (no zero-point input);
- asymmetric: the range ``[min(lo, 0), max(hi, 0)]`` over ``2**bits - 1`` steps, the zero point
  rounded to an integer code;
- codes are ``w * (1 / scale) + zero`` rounded half away from zero, clipped to the range;
  padding codes are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class QuantizedWeight:
    """The quantized form of one ``(N, K)`` weight: ``codes`` ``(N, blocks, block)`` uint8,
    ``scales`` ``(N, blocks)`` float32, ``zero_points`` ``(N, blocks)`` (integer-valued float32
    codes, float values where ``float_zero`` is set) or None (symmetric: the implicit middle)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zero_points: torch.Tensor | None
    bits: int
    block: int
    k: int
    float_zero: bool = False

    @property
    def n(self) -> int:
        return int(self.codes.shape[0])

    def dequantize(self) -> torch.Tensor:
        """The ``(N, K)`` float32 weight these codes stand for."""
        zero = self.zero_points if self.zero_points is not None else \
            torch.full_like(self.scales, float(2 ** (self.bits - 1)))
        w = (self.codes.float() - zero[..., None]) * self.scales[..., None]
        return w.reshape(self.n, -1)[:, :self.k]

    def nbytes(self) -> int:
        """Bytes of the packed MatMulNBits tensors (codes, scales, zero points)."""
        codes = self.codes.numel() * self.bits // 8
        scales = self.scales.numel() * 4
        zeros = 0 if self.zero_points is None else (
            self.zero_points.numel() * 4 if self.float_zero else
            self.n * -(-self.scales.shape[1] * self.bits // 8))
        return codes + scales + zeros


def check_finite(q: QuantizedWeight, name: str) -> None:
    """Refuse NaN or infinite quantized weights, naming the layer."""
    from slimkit.errors import VerificationError

    if not bool(torch.isfinite(q.dequantize()).all()):
        raise VerificationError(f"quantizing '{name}' gives NaN or infinite weights (its block "
                                "scales overflow); nothing was written")


def blocks(w: torch.Tensor, block: int) -> torch.Tensor:
    """``w`` ``(N, K)`` as ``(N, ceil(K / block), block)``, zero-padded."""
    n, k = w.shape
    pad = -k % block
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(n, -1, block)


def grid_params(wb: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor,
                                                                       torch.Tensor | None]:
    """ORT's scale and zero point of each block of ``wb`` ``(..., block)``: shapes ``(...)``.

    Example:
        >>> s, z = grid_params(torch.tensor([[-1.0, 0.5]]), 4, True)
        >>> float(s[0]), z is None
        (0.125, True)
    """
    top = 2 ** bits - 1
    if symmetric:
        hi, lo = wb.amax(-1), wb.amin(-1)
        signed = torch.where(hi.abs() > lo.abs(), hi, lo)
        return signed / -float(2 ** (bits - 1)), None
    lo = wb.amin(-1).clamp(max=0.0)
    hi = wb.amax(-1).clamp(min=0.0)
    scale = (hi - lo) / top
    zero = torch.where(scale == 0, torch.full_like(scale, float(2 ** (bits - 1))),
                       torch.floor(-lo / torch.where(scale == 0, 1.0, scale) + 0.5))
    return scale, zero.clamp(0, top)


def encode(wb: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
           bits: int) -> torch.Tensor:
    """Codes of ``wb`` ``(..., block)`` on the grid ``(scale, zero)`` ``(...)``, as float."""
    z = zero if zero is not None else torch.full_like(scale, float(2 ** (bits - 1)))
    inverse = torch.where(scale == 0, torch.zeros_like(scale), 1.0 / scale)
    q = round_half_away(wb * inverse[..., None] + z[..., None])
    return q.clamp(0, 2 ** bits - 1)


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """``std::round``: halves away from zero (torch.round rounds them to even). Built on floor
    (``x - floor(x)`` is exact; torch.trunc is unvectorised, 50x slower here)."""
    low = torch.floor(x)
    frac = x - low
    return low + torch.where(x >= 0, frac >= 0.5, frac > 0.5).to(x.dtype)


def quantize_rtn(w: torch.Tensor, bits: int, block: int, symmetric: bool) -> QuantizedWeight:
    """Round-to-nearest on ORT's grid (what ``MatMulNBitsQuantizer`` writes).

    Example:
        >>> w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
        >>> q = quantize_rtn(w, 4, 32, True)
        >>> err = (q.dequantize() - w).abs().max()  # half a step; a clipped peak: one step
        >>> bool(err <= q.scales.abs().max() + 1e-6)
        True
    """
    wb = blocks(w.float(), block)
    scale, zero = grid_params(wb, bits, symmetric)
    return QuantizedWeight(zero_padding(encode(wb, scale, zero, bits), w.shape[1]), scale,
                           zero, bits, block, w.shape[1])


def zero_padding(codes: torch.Tensor, k: int) -> torch.Tensor:
    """uint8 codes with the padded tail of the last block set to 0 (ORT's bytes)."""
    flat = codes.reshape(codes.shape[0], -1)
    flat[:, k:] = 0
    return flat.reshape(codes.shape).to(torch.uint8)


def from_params(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int,
                block: int, float_zero: bool = False) -> QuantizedWeight:
    """Codes of ``w`` on given per-block ``scale``/``zero`` ``(N, blocks)``."""
    wb = blocks(w.float(), block)
    codes = zero_padding(encode(wb, scale, zero, bits), w.shape[1])
    return QuantizedWeight(codes, scale.float(), None if zero is None else zero.float(), bits,
                           block, w.shape[1], float_zero)


def pack(q: QuantizedWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MatMulNBits' inputs ``B`` ``(N, blocks, block*bits/8)`` uint8, ``scales``
    ``(N*blocks,)`` float32 and ``zero_points`` (uint8, two 4-bit codes a byte, or float32)."""
    codes: np.ndarray = q.codes.numpy().astype(np.uint8)
    if q.bits == 4:
        codes = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    scales = q.scales.numpy().astype(np.float32).reshape(-1)
    if q.zero_points is None:
        return np.ascontiguousarray(codes), scales, None
    if q.float_zero:
        return np.ascontiguousarray(codes), scales, q.zero_points.numpy().astype(
            np.float32).reshape(-1)
    zeros: np.ndarray = q.zero_points.numpy().astype(np.uint8)
    if q.bits == 4:
        if zeros.shape[1] % 2:
            zeros = np.concatenate([zeros, np.full((zeros.shape[0], 1), 8, np.uint8)], axis=1)
        zeros = (zeros[:, 0::2] | (zeros[:, 1::2] << 4)).astype(np.uint8)
    return np.ascontiguousarray(codes), scales, zeros.reshape(-1)


def concat(parts: list[QuantizedWeight]) -> QuantizedWeight:
    """Weights that share an input, stacked along N (e.g. q, k, v into one QKV MatMul)."""
    first = parts[0]
    if any((p.bits, p.block, p.k, p.float_zero, p.zero_points is None) !=
           (first.bits, first.block, first.k, first.float_zero, first.zero_points is None)
           for p in parts):
        raise ValueError("weights stacked into one MatMul need the same grid")
    zeros = None if first.zero_points is None else torch.cat(
        [p.zero_points for p in parts if p.zero_points is not None])
    return QuantizedWeight(torch.cat([p.codes for p in parts]),
                           torch.cat([p.scales for p in parts]), zeros, first.bits,
                           first.block, first.k, first.float_zero)


def split(q: QuantizedWeight, rows: list[int]) -> list[QuantizedWeight]:
    """``concat``'s inverse: ``q`` cut along N into parts of ``rows`` output features."""
    bounds = np.cumsum([0, *rows])
    return [QuantizedWeight(q.codes[a:b], q.scales[a:b],
                            None if q.zero_points is None else q.zero_points[a:b], q.bits,
                            q.block, q.k, q.float_zero)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def sqnr_db(w: torch.Tensor, q: QuantizedWeight) -> float:
    """Signal to quantization noise of the weight itself, in dB."""
    noise = float((q.dequantize() - w).pow(2).sum())
    return float("inf") if noise == 0 else 10 * float(np.log10(float(w.pow(2).sum()) / noise))
