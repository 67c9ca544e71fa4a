"""AWQ (Lin et al., 2023): scale each input channel of a group of linears by ``s`` before
quantizing (``W -> W * s``), and its producer by ``1 / s`` so the float model is unchanged:
channels that carry large activations get finer steps. ``s = mean|x|^a / mean|w|^(1-a)`` is
searched per group over ``a`` on calibration rows (the group's output error after quantization
on ORT's grid), then each block's clipping range is searched the same way (AWQ's
``auto_clip``).

The ``1 / s`` is folded exactly into the producer: the RMSNorm weight before q/k/v and before
gate/up, the rows of ``up_proj`` before ``down_proj``, the rows of ``v_proj`` before
``o_proj`` (with grouped-query attention one scale per value channel, shared by the query
heads that read it). ONNX Runtime's only AWQ (``NVAWQWeightOnlyQuantConfig``) needs NVIDIA's
ModelOpt and a CUDA device and downloads its calibration set, hence this implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from slimkit.errors import InputError
from slimkit.llm.wquant.calibrate import GroupStats
from slimkit.llm.wquant.grid import blocks, encode, grid_params

CLIP_RATIOS = tuple(1.0 - 0.025 * i for i in range(21))  # 1.0 .. 0.5


@dataclass(frozen=True)
class Grid:
    bits: int
    block: int
    symmetric: bool


def fake_quant(w: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``dequantize(quantize(w))`` on ORT's round-to-nearest grid, ``(N, K)``."""
    wb = blocks(w, grid.block)
    scale, zero = grid_params(wb, grid.bits, grid.symmetric)
    codes = encode(wb, scale, zero, grid.bits)
    mid = torch.full_like(scale, float(2 ** (grid.bits - 1))) if zero is None else zero
    return ((codes - mid[..., None]) * scale[..., None]).reshape(w.shape[0], -1)[:, :w.shape[1]]


def search_scale(w: torch.Tensor, stats: GroupStats, grid: Grid, points: int,
                 tie: torch.Tensor | None = None) -> tuple[torch.Tensor, float, float]:
    """The input-channel scale ``s`` (K,) of the group's stacked weight ``w`` ``(N, K)`` with
    the smallest output error on the sampled rows, its error and the error without scaling.
    ``tie`` maps each input channel to the producer channel whose scale it must share."""
    x = stats.sample()
    reference = x @ w.T
    x_mean = _tied(stats.abs_mean.float(), tie)
    w_mean = _tied(_weight_magnitude(w, grid.block), tie)
    best = (torch.ones_like(x_mean), _error(x, w, torch.ones_like(x_mean), grid, reference))
    plain = best[1]
    for i in range(points):
        a = i / points
        s = (x_mean.pow(a) / w_mean.clamp(min=1e-4).pow(1 - a)).clamp(min=1e-4)
        s = s / torch.sqrt(s.max() * s.min())
        error = _error(x, w, s, grid, reference)
        if error < best[1]:
            best = (s, error)
    return best[0], best[1], plain


def _tied(v: torch.Tensor, tie: torch.Tensor | None) -> torch.Tensor:
    """Average ``v`` over the channels sharing a producer channel, spread back."""
    if tie is None:
        return v
    sums = torch.zeros(int(tie.max()) + 1).index_add_(0, tie, v)
    counts = torch.zeros_like(sums).index_add_(0, tie, torch.ones_like(v))
    return (sums / counts)[tie]


def _weight_magnitude(w: torch.Tensor, block: int) -> torch.Tensor:
    wb = blocks(w.abs(), block)
    normed = (wb / wb.amax(-1, keepdim=True).clamp(min=1e-12)).reshape(w.shape[0], -1)
    return normed[:, :w.shape[1]].mean(0)


def _error(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor, grid: Grid,
           reference: torch.Tensor) -> float:
    out = (x / s) @ fake_quant(w * s, grid).T
    return float((out - reference).pow(2).mean())


def search_clip(w: torch.Tensor, x: torch.Tensor, grid: Grid, rows_at_once: int = 256
                ) -> torch.Tensor:
    """``w`` with each block clipped to ``±ratio * max|block|``, the ratio of each (row, block)
    chosen from ``CLIP_RATIOS`` for the smallest output error on the rows ``x``."""
    n, k = w.shape
    xb = blocks(x, grid.block)  # (T, G, B)
    out = w.clone()
    for r0 in range(0, n, rows_at_once):
        wb = blocks(w[r0:r0 + rows_at_once], grid.block)  # (n, G, B)
        peak = wb.abs().amax(-1, keepdim=True)
        best_err = torch.full(wb.shape[:2], float("inf"))
        best = wb.clone()
        for ratio in CLIP_RATIOS:
            clipped = torch.maximum(torch.minimum(wb, peak * ratio), -peak * ratio)
            dq = blocks(fake_quant(clipped.reshape(wb.shape[0], -1)[:, :k], grid), grid.block)
            err = torch.einsum("tgb,ngb->tng", xb, wb - dq).pow(2).sum(0)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better[..., None], clipped, best)
        out[r0:r0 + rows_at_once] = best.reshape(best.shape[0], -1)[:, :k]
    return out


def producer_of(layer: Any, names: list[str]) -> tuple[str, torch.Tensor | None]:
    """What ``1 / s`` of the group ``names`` folds into (a module name) and, for o_proj, the
    map from its input channels to the value channels they read."""
    first = names[0].rsplit(".", 1)[-1]
    rules = {"q_proj": "input_layernorm", "gate_proj": "post_attention_layernorm",
             "down_proj": "mlp.up_proj", "o_proj": "self_attn.v_proj"}
    if first not in rules or not _has(layer, rules[first]):
        raise InputError(f"AWQ cannot fold scales into the producer of '{names[0]}' (it knows "
                         "Llama-style layers: Llama, Mistral, Qwen2, Qwen3); use gptq or rtn")
    if first != "o_proj":
        return rules[first], None
    config = layer.self_attn.config
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    channel = torch.arange(heads * head_dim)
    head, dim = channel // head_dim, channel % head_dim
    return rules[first], (head // (heads // kv)) * head_dim + dim


def _has(layer: Any, dotted: str) -> bool:
    try:
        layer.get_submodule(dotted)
    except AttributeError:
        return False
    return True


@torch.no_grad()
def fold_scale(layer: Any, names: list[str], producer: str, s: torch.Tensor,
               tie: torch.Tensor | None) -> None:
    """``W[:, k] *= s[k]`` for the group, and the producer's output channel divided by its
    scale (an exact rewrite of the float model)."""
    for name in names:
        linear = layer.get_submodule(name)
        linear.weight.mul_(s[None, :])
    module = layer.get_submodule(producer)
    out_scale = s if tie is None else _producer_scale(s, tie)
    if isinstance(module, torch.nn.Linear):
        module.weight.div_(out_scale[:, None])
        if module.bias is not None:
            module.bias.div_(out_scale)
    else:  # RMSNorm (no bias): y = x_normed * weight
        module.weight.div_(out_scale)


def _producer_scale(s: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
    out = torch.ones(int(tie.max()) + 1)
    out[tie] = s
    return out
