"""The config of the causal-LM search: the budget, the space and the two stages' sizes, frozen
and validated on creation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from slimkit.config import config_to_dict
from slimkit.errors import InputError

CALIBRATION_TEXT = "builtin:python-reference:calibration"
EVALUATION_TEXT = "builtin:python-reference:evaluation"
PRECISIONS = ("int4", "int8", "w8a8", "fp32")
INT4_METHODS = ("rtn", "hqq", "gptq", "awq")
# AWQ is opt-in: one AWQ screen of SmolLM2 ran over 10 CPU minutes (its scale and clip searches;
# loaded machine) against about 1.5-2 for GPTQ, which a 24-trial screen cannot afford
DEFAULT_INT4_METHODS = ("rtn", "hqq", "gptq")
BLOCK_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class LLMSearchConfig:
    """What ``search_llm`` searches and under which budget.

    Args:
        max_ppl_increase: the largest relative perplexity increase over the fp32 model
            (0.05: +5%). Default when neither budget is given.
        max_kl: the largest mean KL divergence (nats/token) from the fp32 model instead.
        max_perplexity: optionally also an absolute perplexity budget; refused up front when
            the original model already misses it.
        precisions: of ``int4`` (weight-only, MatMulNBits), ``int8`` (weight-only), ``w8a8``
            (SmoothQuant), ``fp32``.
        int4_methods, block_sizes, keep_8bit, lm_head: the int4 sub-space (int4_methods:
            rtn, hqq, gptq by default; awq is opt-in, its screen costs about 5x GPTQ's;
            keep_8bit: the fractions of decoder weights kept at 8 bits by measured
            sensitivity: on SmolLM2
            GPTQ int4 at block 32 cost +20% perplexity alone and +7% with half the weights
            at 8 bits, so a 5% budget needs the high fractions; lm_head: ``int8`` and/or
            ``int4``).
        depth_ratios, width_ratios: structural pruning ratios (0 = none). Off by default: each
            pruned variant is pruned (and distilled) once, which costs minutes on a real model.
        distill_steps: distillation steps of each pruned variant (0: none).
        trials: screened candidates (torch fake-quant perplexity); a space no larger than
            this is screened exhaustively, a larger one by Optuna's TPE sampler.
        finalists: candidates of the estimated front exported and measured (the best single
            technique under the budget is always measured too).
        screen_windows, screen_window: evaluation windows of the screen.
        eval_windows, eval_window: held-out evaluation windows of the finalists.
        calibration_windows, calibration_window: calibration text for GPTQ/AWQ/keep_8bit/W8A8.
        speed_rounds: interleaved decode/prefill rounds of the finalists (0: size only).
        speed_prompt, speed_new_tokens: the timed prompt and decode lengths.
        threads: torch and ONNX Runtime threads. seed: the sampler.
    """

    max_ppl_increase: float | None = None
    max_kl: float | None = None
    max_perplexity: float | None = None
    precisions: tuple[str, ...] = PRECISIONS
    int4_methods: tuple[str, ...] = DEFAULT_INT4_METHODS
    block_sizes: tuple[int, ...] = BLOCK_SIZES
    keep_8bit: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    lm_head: tuple[str, ...] = ("int8", "int4")
    depth_ratios: tuple[float, ...] = (0.0,)
    width_ratios: tuple[float, ...] = (0.0,)
    distill_steps: int = 0
    trials: int = 24
    finalists: int = 3
    screen_windows: int = 2
    screen_window: int = 512
    eval_windows: int = 8
    eval_window: int = 512
    calibration_windows: int = 8
    calibration_window: int = 512
    speed_rounds: int = 3
    speed_prompt: int = 128
    speed_new_tokens: int = 64
    threads: int | None = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_ppl_increase is not None and self.max_kl is not None:
            raise InputError("give one budget: max_ppl_increase or max_kl, not both")
        if self.max_ppl_increase is None and self.max_kl is None:
            object.__setattr__(self, "max_ppl_increase", 0.05)
        for name in ("max_ppl_increase", "max_kl", "max_perplexity"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a finite number > 0, got {value}")
        _subset("precisions", self.precisions, PRECISIONS)
        _subset("int4_methods", self.int4_methods, INT4_METHODS)
        _subset("block_sizes", self.block_sizes, BLOCK_SIZES)
        _subset("lm_head", self.lm_head, ("int8", "int4"))
        for name in ("keep_8bit", "depth_ratios", "width_ratios"):
            values = getattr(self, name)
            if not values or any(not 0 <= v < 1 for v in values):
                raise InputError(f"{name} must be fractions in [0, 1), got {values}")
        positive = ("trials", "finalists", "screen_windows", "eval_windows",
                    "calibration_windows", "speed_prompt", "speed_new_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("screen_window", "eval_window", "calibration_window"):
            if getattr(self, name) < 16:
                raise InputError(f"{name} must be >= 16 tokens, got {getattr(self, name)}")
        if self.speed_rounds < 0 or self.distill_steps < 0:
            raise InputError("speed_rounds and distill_steps must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise InputError("threads must be >= 1 (or None for all cores)")

    @property
    def budget(self) -> tuple[str, float]:
        """``(measure, limit)``: ``ppl_increase`` or ``kl``."""
        if self.max_kl is not None:
            return "kl", self.max_kl
        return "ppl_increase", float(self.max_ppl_increase or 0.05)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def _subset(name: str, values: tuple[Any, ...], allowed: tuple[Any, ...]) -> None:
    if not values or any(v not in allowed for v in values):
        raise InputError(f"{name} must be a non-empty choice of {', '.join(map(str, allowed))}; "
                         f"got {values}")
