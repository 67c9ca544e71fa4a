"""The LM head and the token embedding: decisions of their own (int8 by default), since the
head is a fifth of a small model's per-token work and the embedding is read one row a token.
A model that ties them gets one shared tensor when both end up on the same grid."""

from __future__ import annotations

from typing import Any

import torch

from slimkit.llm.wquant.awq import search_scale
from slimkit.llm.wquant.calibrate import final_norm_stats
from slimkit.llm.wquant.config import Method, Precision, WeightQuantConfig
from slimkit.llm.wquant.gptq import output_error
from slimkit.llm.wquant.grid import QuantizedWeight, check_finite, sqnr_db
from slimkit.llm.wquant.methods import QUANTIZERS, Job
from slimkit.llm.wquant.passes import UnitReport, grid_for

BITS = {Precision.INT4: 4, Precision.INT8: 8}
EMBEDDING_BLOCKS = (128, 64, 32, 16)


@torch.no_grad()
def quantize_head(work: Any, windows: torch.Tensor | None,
                  config: WeightQuantConfig) -> tuple[QuantizedWeight | None, UnitReport | None]:
    """The head with the config's method at its own precision (None when fp32); the working
    copy's head then holds the dequantized weight (AWQ's scale folded into the final norm)."""
    if config.lm_head == Precision.FP32:
        return None, None
    head = work.get_output_embeddings()
    grid = grid_for(config, BITS[config.lm_head])
    stats = None
    if windows is not None and config.method in (Method.GPTQ, Method.AWQ):
        stats = final_norm_stats(work, windows, config.advanced.awq_tokens, config.seed)
    if config.method == Method.AWQ and stats is not None:
        s, _, _ = search_scale(head.weight.float(), stats, grid, config.advanced.awq_grid)
        head.weight.mul_(s[None, :])
        work.model.norm.weight.div_(s)
        inverse = (1.0 / s).double()
        stats.hessian *= inverse[:, None] * inverse[None, :]
        stats.samples = [x / s for x in stats.samples]
    w = head.weight.detach().float().clone()
    q, note = QUANTIZERS.get(config.method.value)(w, Job("lm_head", grid, stats,
                                                         config.advanced))
    check_finite(q, "lm_head")
    head.weight.copy_(q.dequantize())
    error = None if stats is None else output_error(w, q, stats.hessian)
    return q, UnitReport(["lm_head"], q.bits, q.block, note, w.numel(), round(sqnr_db(w, q), 2),
                         error, bool(w.shape[1] % q.block))


@torch.no_grad()
def quantize_embedding(work: Any, config: WeightQuantConfig) -> tuple[
        QuantizedWeight | None, UnitReport | None]:
    """The token embedding, round to nearest (a lookup table has no input to calibrate on; the
    gguf method keeps its GGUF grid), in blocks that divide the hidden size."""
    if config.embeddings == Precision.FP32:
        return None, None
    table = work.get_input_embeddings()
    w = table.weight.detach().float().clone()
    block = config.block_size if w.shape[1] % config.block_size == 0 else next(
        (b for b in EMBEDDING_BLOCKS if w.shape[1] % b == 0), 0)
    if not block:
        return None, None
    grid = grid_for(config, BITS[config.embeddings])
    grid = type(grid)(grid.bits, block, grid.symmetric)
    method = "gguf" if config.method == Method.GGUF else "rtn"
    q, note = QUANTIZERS.get(method)(w, Job("model.embed_tokens", grid, None, config.advanced))
    check_finite(q, "model.embed_tokens")
    table.weight.copy_(q.dequantize())
    return q, UnitReport(["model.embed_tokens"], q.bits, q.block, note, w.numel(),
                         round(sqnr_db(w, q), 2))


def same_grid(a: QuantizedWeight | None, b: QuantizedWeight | None) -> bool:
    """Whether two quantized tensors are identical (then the head and embedding share one)."""
    if a is None or b is None or (a.bits, a.block, a.k, a.float_zero) != (
            b.bits, b.block, b.k, b.float_zero) or a.codes.shape != b.codes.shape:
        return False
    zeros_equal = (a.zero_points is None and b.zero_points is None) or (
        a.zero_points is not None and b.zero_points is not None
        and torch.equal(a.zero_points, b.zero_points))
    return zeros_equal and torch.equal(a.codes, b.codes) and torch.equal(a.scales, b.scales)
