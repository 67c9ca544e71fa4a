"""The arithmetic of W8A8 in torch, matching the int8 graphs that ONNX Runtime runs: activations
quantized at run time per token (symmetric, u8 with zero point 128: slimkit's graph,
:mod:`slimkit.llm.w8a8.onnx_int8`) or per tensor (u8 with a zero point: ``DynamicQuantizeLinear``,
what ``quantize_dynamic`` emits), weights per output channel to symmetric s8, and SmoothQuant's
per-channel scales.

Pure functions on tensors: the alpha search (:mod:`slimkit.llm.w8a8.calibrate`) uses them to
emulate each quantized MatMul, the tests check them against closed forms.
"""

from __future__ import annotations

import torch

S8_MAX = 127  # quantize_dynamic's symmetric s8 weights: [-127, 127]
S8_MAX_REDUCED = 63  # reduce_range (7-bit weights), for x86 without VNNI
U8_MAX = 255
SCALE_CLAMP = (1e-5, 1e5)


def fake_quant_u8(x: torch.Tensor) -> torch.Tensor:
    """``x`` through ONNX Runtime's ``DynamicQuantizeLinear`` and back: one u8 scale and zero
    point for the whole tensor, the range widened to include 0, ties rounded to even.

    Example:
        >>> fake_quant_u8(torch.tensor([-1.0, 0.0, 0.5, 4.1])).tolist()
        [-1.0, 0.0, 0.5, 4.099999904632568]
    """
    lo = torch.clamp(x.min(), max=0.0)
    hi = torch.clamp(x.max(), min=0.0)
    scale = (hi - lo) / U8_MAX
    if float(scale) == 0.0:
        return torch.zeros_like(x)
    zero = torch.clamp(torch.round(-lo / scale), 0, U8_MAX)
    q = torch.clamp(torch.round(x / scale) + zero, 0, U8_MAX)
    return (q - zero) * scale


def fake_quant_tokens(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(tokens, channels)`` quantized per token (row) to 255 symmetric levels (scale =
    max|row| / 127, zero point 128 in u8) and back.

    Example:
        >>> fake_quant_tokens(torch.tensor([[127.0, 0.4], [0.0, 0.0]])).tolist()
        [[127.0, 0.0], [0.0, 0.0]]
    """
    scale = x.abs().amax(dim=-1, keepdim=True) / S8_MAX
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return torch.clamp(torch.round(x / scale), -S8_MAX, S8_MAX) * scale


ACTIVATION_QUANTIZERS = {"token": fake_quant_tokens, "tensor": fake_quant_u8}


def fake_quant_s8_rows(w: torch.Tensor, qmax: int = S8_MAX) -> torch.Tensor:
    """``w`` ``(out, in)`` quantized per output row to symmetric int8 (scale = max|row| / qmax)
    and back.

    Example:
        >>> fake_quant_s8_rows(torch.tensor([[1.0, -0.5], [0.0, 0.0]])).tolist()
        [[1.0, -0.5039370059967041], [0.0, 0.0]]
    """
    scale = w.abs().amax(dim=1, keepdim=True) / qmax
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale


def smoothing_scales(act_max: torch.Tensor, weight_max: torch.Tensor,
                     alpha: float) -> torch.Tensor:
    """SmoothQuant's ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` per input channel ``j``
    (Xiao et al. 2023): dividing activations by ``s`` and multiplying the weight columns by it
    moves quantization difficulty from activations to weights. Channels that never fire keep 1.

    Example:
        >>> smoothing_scales(torch.tensor([16.0, 0.0]), torch.tensor([1.0, 1.0]), 0.5).tolist()
        [4.0, 1.0]
    """
    a = act_max.double().clamp(min=SCALE_CLAMP[0])
    w = weight_max.double().clamp(min=SCALE_CLAMP[0])
    s = (a ** alpha / w ** (1 - alpha)).clamp(*SCALE_CLAMP)
    s = torch.where((act_max > 0) & (weight_max > 0), s, torch.ones_like(s))
    return s.float()


def matmul_error(x: torch.Tensor, weights: list[torch.Tensor], outputs: list[torch.Tensor],
                 scale: torch.Tensor | None, activations: str = "token",
                 qmax: int = S8_MAX) -> float:
    """Squared error of the W8A8 MatMuls ``x @ w.T`` against their float ``outputs`` (one per
    ``w`` reading ``x``), with ``x`` divided by ``scale`` and the weight columns multiplied by
    it first (SmoothQuant; None: as they are).

    Example:
        >>> x, w = torch.tensor([[2.54, 1.28]]), torch.eye(2)  # both on the int8 grid
        >>> matmul_error(x, [w], [x @ w.T], None) < 1e-10
        True
    """
    xq = ACTIVATION_QUANTIZERS[activations](x if scale is None else x / scale)
    total = 0.0
    for w, y in zip(weights, outputs, strict=True):
        ws = w if scale is None else w * scale
        total += float((xq @ fake_quant_s8_rows(ws, qmax).T - y).double().square().sum())
    return total
