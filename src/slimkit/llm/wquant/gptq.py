"""GPTQ (Frantar et al., 2022): quantize a weight column by column, spreading each column's
rounding error over the columns not yet quantized through the inverse Hessian ``H = X^T X`` of
the layer's inputs, so the layer's *output* error on the calibration text is what is minimised.

**Why not ONNX Runtime's GPTQ** (``GPTQWeightOnlyQuantConfig``, from Intel Neural
Compressor): it reruns the whole ONNX model over the calibration set once per distinct MatMul
input (121 full passes for SmolLM2's 30 layers, where slimkit's layer-by-layer pass costs one),
every layer sees the float model's activations (no propagation of the quantized layers'
error), it writes 8-bit results as float weights rather than MatMulNBits, and it takes an ONNX
data reader, not slimkit's calibration windows. Here the Hessian comes from slimkit's
layer-by-layer calibration (:mod:`slimkit.llm.wquant.calibrate`) and the result is on the
exact grid ORT's round-to-nearest writes (:mod:`slimkit.llm.wquant.grid`), block by block.
"""

from __future__ import annotations

import torch

from slimkit.llm.wquant.grid import QuantizedWeight, blocks, encode, grid_params, zero_padding

COLUMNS_AT_ONCE = 128  # GPTQ's lazy batch of columns (a speed knob, not a result knob)


def inverse_hessian_factor(h: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1`` and the mask of dead
    input channels (never active on the calibration text: their weights are free)."""
    h = h.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True).float(), dead


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, bits: int, block: int, symmetric: bool,
                  damp: float = 0.01, act_order: bool = True) -> QuantizedWeight:
    """GPTQ of ``w`` ``(N, K)`` given the Hessian ``h`` ``(K, K)`` of its inputs.

    Each block's scale and zero point are ORT's. With ``act_order`` the columns are quantized
    in order of decreasing Hessian diagonal (the most active inputs first, while the most
    columns are left to absorb their error) and each block's grid is fixed beforehand from the
    original weights ("static groups"), so the blocks stay contiguous runs of input channels,
    as MatMulNBits needs (no reordering index at run time). Without it, the columns go in
    order and a block's grid is taken from the weights as updated when its first column is
    reached. The per-column loop runs on one torch thread (restored after): its operations are
    too small for threads to pay, and on a busy machine a second thread made it 10x slower.

    Example:
        >>> x = torch.randn(256, 64)
        >>> w = torch.randn(16, 64)
        >>> q = gptq_quantize(w, x.T @ x, 4, 32, True)
        >>> q.codes.shape, q.scales.shape
        (torch.Size([16, 2, 32]), torch.Size([16, 2]))
    """
    from slimkit.llm.runtime import torch_threads

    with torch_threads(1):
        if act_order:
            return _gptq_act_order(w, h, bits, block, symmetric, damp)
        return _gptq_in_order(w, h, bits, block, symmetric, damp)


def _gptq_in_order(w: torch.Tensor, h: torch.Tensor, bits: int, block: int, symmetric: bool,
                   damp: float) -> QuantizedWeight:
    n, k = w.shape
    u, dead = inverse_hessian_factor(h, damp)
    work = w.float().clone()
    work[:, dead] = 0.0
    groups = -(-k // block)
    scales = torch.zeros(n, groups)
    zeros = None if symmetric else torch.zeros(n, groups)
    codes = torch.zeros(n, groups * block)
    for start in range(0, k, COLUMNS_AT_ONCE):
        end = min(start + COLUMNS_AT_ONCE, k)
        chunk = work[:, start:end].clone()
        errors = torch.zeros_like(chunk)
        for j in range(end - start):
            col = start + j
            if col % block == 0:
                g = col // block
                s, z = grid_params(work_block(work, chunk, start, col, block, k), bits, symmetric)
                scales[:, g] = s[:, 0]
                if zeros is not None and z is not None:
                    zeros[:, g] = z[:, 0]
            g = col // block
            zg = None if zeros is None else zeros[:, g]
            q = encode(chunk[:, j:j + 1], scales[:, g], zg, bits)[:, 0]
            codes[:, col] = q
            mid = float(2 ** (bits - 1)) if zg is None else zg
            dq = (q - mid) * scales[:, g]
            err = (chunk[:, j] - dq) / u[col, col]
            chunk[:, j:] -= err[:, None] * u[col, col:end][None, :]
            errors[:, j] = err
        work[:, end:] -= errors @ u[start:end, end:]
    packed = zero_padding(codes.reshape(n, groups, block), k)
    return QuantizedWeight(packed, scales, zeros, bits, block, k)


def _gptq_act_order(w: torch.Tensor, h: torch.Tensor, bits: int, block: int, symmetric: bool,
                    damp: float) -> QuantizedWeight:
    n, k = w.shape
    scale, zero = grid_params(blocks(w.float(), block), bits, symmetric)  # static groups
    order = torch.argsort(torch.diag(h), descending=True)
    u, dead = inverse_hessian_factor(h[order][:, order], damp)
    work = w.float()[:, order].clone()
    work[:, dead] = 0.0
    group_of = order // block
    codes = torch.zeros(n, k)
    mid = torch.full_like(scale, float(2 ** (bits - 1))) if zero is None else zero
    for start in range(0, k, COLUMNS_AT_ONCE):
        end = min(start + COLUMNS_AT_ONCE, k)
        chunk = work[:, start:end].clone()
        errors = torch.zeros_like(chunk)
        for j in range(end - start):
            col = start + j
            g = int(group_of[col])
            q = encode(chunk[:, j:j + 1], scale[:, g], None if zero is None else zero[:, g],
                       bits)[:, 0]
            codes[:, col] = q
            err = (chunk[:, j] - (q - mid[:, g]) * scale[:, g]) / u[col, col]
            chunk[:, j:] -= err[:, None] * u[col, col:end][None, :]
            errors[:, j] = err
        work[:, end:] -= errors @ u[start:end, end:]
    natural = torch.zeros(n, k)
    natural[:, order] = codes
    groups = scale.shape[1]
    padded = torch.nn.functional.pad(natural, (0, groups * block - k))
    return QuantizedWeight(zero_padding(padded.reshape(n, groups, block), k), scale, zero, bits,
                           block, k)


def work_block(work: torch.Tensor, chunk: torch.Tensor, start: int, col: int, block: int,
               k: int) -> torch.Tensor:
    """The current values of the block starting at ``col`` (partly in the lazy ``chunk``),
    zero-padded to ``block`` columns, as ``(N, 1, block)``."""
    end = min(col + block, k)
    inside = min(end, start + chunk.shape[1])
    values = torch.cat([chunk[:, col - start:inside - start], work[:, inside:end]], dim=1)
    if values.shape[1] < block:
        values = torch.nn.functional.pad(values, (0, block - values.shape[1]))
    return values[:, None, :]


def output_error(w: torch.Tensor, q: QuantizedWeight, h: torch.Tensor) -> float:
    """``tr(dW H dW^T) / tr(W H W^T)``: the layer's relative output error on the calibration
    inputs whose Hessian is ``h`` (their squared output error over their output energy)."""
    delta = (q.dequantize() - w.float()).double()
    hd = h.double()
    energy = float(torch.einsum("nk,kl,nl->", w.double(), hd, w.double()))
    return float(torch.einsum("nk,kl,nl->", delta, hd, delta)) / max(energy, 1e-30)
