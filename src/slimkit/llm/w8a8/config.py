"""The W8A8 config: frozen dataclasses validated on creation; CLI flags map onto the fields."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from slimkit.config import coerce_enums, config_to_dict
from slimkit.errors import InputError
from slimkit.llm.evaluate import PerplexityConfig
from slimkit.selector import Selector

CALIBRATION_TEXT = "builtin:python-reference:calibration"


class Smoothing(str, enum.Enum):
    PER_LAYER = "per-layer"  # each site its alpha of least emulated error (or none)
    GLOBAL = "global"  # one alpha for every site, least summed relative error
    FIXED = "fixed"  # ``alpha`` everywhere
    OFF = "off"


class Activations(str, enum.Enum):
    TOKEN = "token"  # one scale per token (slimkit's graph, fused by ORT: MatMulIntegerToFloat)
    TENSOR = "tensor"  # one scale per tensor (ORT quantize_dynamic: DynamicQuantizeMatMul)


class Head(str, enum.Enum):
    INT8 = "int8"  # weight-only int8 (MatMulNBits, block 32, int8 compute): where VNNI pays
    FLOAT = "float"


class KVCache(str, enum.Enum):
    FLOAT = "float"
    INT8 = "int8"  # GroupQueryAttention's int8 cache, static per-channel scales from calibration


@dataclass(frozen=True)
class AdvancedW8A8:
    """Rare knobs: the alpha grid and how much calibration text is read."""

    alpha_grid: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    calibration_tokens: int = 4096
    calibration_window: int = 512
    search_tokens: int = 1024  # of the calibration windows, read by the alpha search

    def __post_init__(self) -> None:
        if not self.alpha_grid or not all(0.0 < a < 1.0 for a in self.alpha_grid):
            raise InputError("alpha_grid needs one or more values in (0, 1)")
        if self.calibration_window < 2 or self.calibration_tokens < self.calibration_window:
            raise InputError("calibration_tokens must be >= calibration_window >= 2")
        if self.search_tokens < 1:
            raise InputError("search_tokens must be >= 1")


@dataclass(frozen=True)
class SpeedConfig:
    """The side-by-side speed measurement of the report (None in W8A8Config: skipped)."""

    threads: int = 1
    prompt_tokens: int = 128
    new_tokens: int = 64
    rounds: int = 3
    baselines: bool = True  # also ORT fp32 and torch dynamic int8 (without smoothing)

    def __post_init__(self) -> None:
        if min(self.threads, self.prompt_tokens, self.new_tokens, self.rounds) < 1:
            raise InputError("speed: threads, prompt_tokens, new_tokens and rounds must be >= 1")


@dataclass(frozen=True)
class W8A8Config:
    """How to make a W8A8 causal LM.

    Args:
        smoothing: SmoothQuant's alpha per layer (default), global, fixed, or off.
        alpha: the alpha of ``fixed`` smoothing.
        activations: dynamic int8 activations per ``token`` (default) or per ``tensor``.
        keep_float: decoder layers kept in float (``name:``/``re:`` rules on names such as
            ``layers.3.mlp.down_proj``, ``layers.0.attn.qkv_proj``).
        lm_head: the LM head as ``int8`` weight-only (default; ONNX Runtime's MatMulNBits,
            block 32, which quantizes its input per block: the head cannot be smoothed without
            untying it from the embeddings, and W8A8 per token cost it +0.8% perplexity on
            SmolLM2 against +0.1% this way) or ``float``. Without an int8 dot product (no
            VNNI) the head stays float: that kernel has no fast path there.
        kv_cache: ``float`` or ``int8`` (GroupQueryAttention's int8 cache).
        max_ppl_increase: the largest relative perplexity increase allowed (e.g. 0.03);
            the layers with the largest emulated error are kept float until it holds.
        max_perplexity: an absolute perplexity budget on the evaluation text; refused up
            front when the original model already misses it.
        evaluation: the held-out text and windows of the fidelity check.
        speed: the speed measurement (None: skipped).
        advanced: the alpha grid and calibration sizes.
    """

    smoothing: Smoothing = Smoothing.PER_LAYER
    alpha: float = 0.5
    activations: Activations = Activations.TOKEN
    keep_float: tuple[str, ...] = ()
    lm_head: Head = Head.INT8
    kv_cache: KVCache = KVCache.FLOAT
    max_ppl_increase: float | None = None
    max_perplexity: float | None = None
    evaluation: PerplexityConfig = field(default_factory=PerplexityConfig)
    speed: SpeedConfig | None = field(default_factory=SpeedConfig)
    advanced: AdvancedW8A8 = field(default_factory=AdvancedW8A8)

    def __post_init__(self) -> None:
        coerce_enums(self, {"smoothing": Smoothing, "activations": Activations,
                            "lm_head": Head, "kv_cache": KVCache})
        Selector(tuple(self.keep_float))  # validates the rules' syntax
        if not 0.0 < self.alpha < 1.0:
            raise InputError(f"alpha must be in (0, 1), got {self.alpha}")
        for name in ("max_ppl_increase", "max_perplexity"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a finite number > 0, got {value}")
        if self.evaluation.text.endswith(":calibration"):
            raise InputError("evaluation text must not be the calibration part: judge on "
                             "held-out text (builtin:python-reference:evaluation)")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)
