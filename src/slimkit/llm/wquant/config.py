"""The config of weight-only quantization of causal LMs: one frozen dataclass for what a user (or
a search) chooses, one for the rare knobs, both validated on creation."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from slimkit.config import coerce_enums, config_to_dict
from slimkit.errors import InputError

CALIBRATION_TEXT = "builtin:python-reference:calibration"
BLOCK_SIZES = (16, 32, 64, 128, 256)  # MatMulNBits' CPU kernels
ACCURACY_LEVELS = (0, 1, 2, 3, 4)


class Method(str, enum.Enum):
    RTN = "rtn"  # round to nearest (ONNX Runtime's own block quantizer)
    GPTQ = "gptq"  # Hessian-based error compensation from calibration text
    AWQ = "awq"  # activation-aware per-channel scales + clipping, searched per layer
    HQQ = "hqq"  # half-quadratic zero-point optimisation, calibration-free
    GGUF = "gguf"  # reproduce the weights' own GGUF block grid (Q4_0, Q4_1, Q8_0)


class Precision(str, enum.Enum):
    FP32 = "fp32"
    INT8 = "int8"
    INT4 = "int4"


METHODS_NEEDING_TEXT = frozenset({Method.GPTQ, Method.AWQ})


@dataclass(frozen=True)
class AdvancedWeightQuantConfig:
    """Rare knobs of :class:`WeightQuantConfig`.

    Args:
        calibration_windows: windows of ``calibration_window`` tokens of calibration text.
        calibration_window: tokens per calibration window.
        gptq_damp: GPTQ's dampening, a fraction of the mean Hessian diagonal.
        gptq_act_order: quantize columns by decreasing activity, with static block grids
            (SmolLM2, block 128 sym, layers only: +11.4% perplexity against +20.0% in order).
        awq_grid: points of AWQ's scale-exponent search in [0, 1).
        awq_clip: also search per-block clipping ranges (AWQ's ``auto_clip``).
        awq_tokens: calibration tokens sampled for AWQ's searches (their cost grows with it).
        hqq_iterations: HQQ's proximal iterations per weight.
        float_zero_points: write float zero points where a grid needs them (exact for
            ``gguf`` Q4_1 blocks, but ONNX Runtime's CPU kernel then dequantizes every call:
            measured about 40x slower than fp32 per MatMul on Zen 4); else integer ones.
        verify_tokens: prompt tokens of the graph check against the fake-quantized torch model.
        ppl_windows, ppl_window: evaluation windows for perplexity, KL and top-1 agreement.
        speed_prompt, speed_new_tokens, speed_rounds: the side-by-side timing with fp32
            (``speed_rounds=0`` skips it).
    """

    calibration_windows: int = 16
    calibration_window: int = 512
    gptq_damp: float = 0.01
    gptq_act_order: bool = True
    awq_grid: int = 20
    awq_clip: bool = True
    awq_tokens: int = 2048
    hqq_iterations: int = 20
    float_zero_points: bool = False
    verify_tokens: int = 32
    ppl_windows: int = 8
    ppl_window: int = 512
    speed_prompt: int = 128
    speed_new_tokens: int = 64
    speed_rounds: int = 3

    def __post_init__(self) -> None:
        positive = ("calibration_windows", "awq_grid", "awq_tokens", "hqq_iterations",
                    "verify_tokens", "ppl_windows", "speed_prompt", "speed_new_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.calibration_window < 16 or self.ppl_window < 16:
            raise InputError("calibration_window and ppl_window must be >= 16 tokens")
        if not 0.0 < self.gptq_damp < 1.0:
            raise InputError(f"gptq_damp must be in (0, 1), got {self.gptq_damp}")
        if self.speed_rounds < 0:
            raise InputError("speed_rounds must be >= 0 (0 skips the timing)")


@dataclass(frozen=True)
class WeightQuantConfig:
    """How to quantize the weights of a causal LM to ONNX Runtime's ``MatMulNBits``.

    Args:
        mode: ``int4`` or ``int8``: the bits of the decoder layers' MatMul weights.
        method: ``rtn``, ``gptq``, ``awq``, ``hqq`` or ``gguf`` (see :class:`Method`).
        block_size: weights per scale along the input dimension (16-256, a power of two);
            a block that does not divide a layer's input dimension is padded with zeros
            (MatMulNBits' own layout), and the report says which layers were padded.
        symmetric: no zero point (signed grid); else a zero point per block. None: the
            method's own choice (symmetric, except hqq, which optimises zero points).
        lm_head: ``int8`` (default), ``int4`` (same method and block as the layers) or ``fp32``.
        embeddings: ``int8`` (default), ``int4`` or ``fp32``. Tied embeddings share the head's
            quantized tensor when both have the same grid; otherwise each gets its own.
        keep_8bit: the fraction of decoder MatMul weights (by parameter count) kept at 8 bits
            in int4 mode: the layers whose 4-bit output error, measured on calibration text,
            is largest.
        accuracy_level: MatMulNBits' compute type: ``auto`` picks the fastest on this CPU by
            measuring level 1 (fp32) and 4 (int8 activations); or 0-4.
        calibration: the text GPTQ, AWQ and ``keep_8bit`` measure on (never the text the
            model is evaluated on).
        threads: torch and ONNX Runtime intra-op threads of the calibration, the evaluation
            and the speed measurement (None: all cores).
        seed: sampling of calibration tokens.
    """

    mode: Precision = Precision.INT4
    method: Method = Method.RTN
    block_size: int = 32
    symmetric: bool | None = None
    lm_head: Precision = Precision.INT8
    embeddings: Precision = Precision.INT8
    keep_8bit: float = 0.0
    accuracy_level: str | int = "auto"
    calibration: str = CALIBRATION_TEXT
    threads: int | None = 1
    seed: int = 0
    advanced: AdvancedWeightQuantConfig = field(default_factory=AdvancedWeightQuantConfig)

    def __post_init__(self) -> None:
        coerce_enums(self, {"mode": Precision, "method": Method, "lm_head": Precision,
                            "embeddings": Precision})
        if self.mode == Precision.FP32:
            raise InputError("mode must be int4 or int8 (fp32 is 'slimkit export')")
        if self.block_size not in BLOCK_SIZES:
            raise InputError(f"block_size {self.block_size} is not one MatMulNBits runs: "
                             f"{', '.join(map(str, BLOCK_SIZES))}")
        if self.method == Method.GGUF and self.block_size != 32:
            raise InputError("method gguf reproduces GGUF's blocks of 32: use block_size 32")
        if self.method == Method.HQQ and self.symmetric:
            raise InputError("hqq optimises zero points, so its blocks are asymmetric: leave "
                             "symmetric unset (or False)")
        if not 0.0 <= self.keep_8bit <= 1.0:
            raise InputError(f"keep_8bit must be a fraction in [0, 1], got {self.keep_8bit}")
        if self.keep_8bit and self.mode == Precision.INT8:
            raise InputError("keep_8bit applies to int4 mode (int8 mode keeps every layer at 8)")
        level = self.accuracy_level
        if level != "auto" and (isinstance(level, bool) or str(level) not in
                                {str(v) for v in ACCURACY_LEVELS}):
            raise InputError(f"accuracy_level must be 'auto' or 0-4, got {level!r}")
        if level != "auto":
            object.__setattr__(self, "accuracy_level", int(level))
        if self.threads is not None and self.threads < 1:
            raise InputError("threads must be >= 1 (or None for all cores)")

    @property
    def bits(self) -> int:
        return 4 if self.mode == Precision.INT4 else 8

    @property
    def is_symmetric(self) -> bool:
        return self.symmetric if self.symmetric is not None else self.method != Method.HQQ

    @property
    def needs_calibration(self) -> bool:
        return self.method in METHODS_NEEDING_TEXT or self.keep_8bit > 0

    def to_dict(self) -> dict[str, Any]:
        data = config_to_dict(self)
        data["advanced"] = config_to_dict(self.advanced)
        return data
