"""The quantization config: one frozen dataclass, validated on creation, that the CLI flags and
(later) recipes map onto field by field."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from slimkit.config import coerce_enums, config_to_dict
from slimkit.errors import InputError
from slimkit.selector import Selector


class QuantMode(str, enum.Enum):
    DYNAMIC = "dynamic"  # int8 weights, activations quantized at run time
    STATIC = "static"  # int8 weights and calibrated int8 activations (QDQ)
    INT4 = "int4"  # weight-only int4, block-wise scales (MatMulNBits)
    FP16 = "fp16"  # half-precision weights and compute, for GPU execution providers
    QAT = "qat"  # quantization-aware fine-tuning in torch, then static int8 (QDQ)


class CalibMethod(str, enum.Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"


class Equalize(str, enum.Enum):
    AUTO = "auto"  # static mode on torch CNNs with depthwise pairs: tried, kept when it helps
    ON = "on"  # always (static mode, torch models)
    OFF = "off"


class ActivationType(str, enum.Enum):
    AUTO = "auto"  # chosen for the CPU: u8 on x86 (the u8 x s8 integer path), s8 on Arm
    U8 = "u8"
    S8 = "s8"


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantize.

    Args:
        mode: dynamic, static, int4 or fp16.
        per_channel: one weight scale per output channel (int8 modes).
        method: calibration method of static mode.
        activation_type: auto (chosen for the hardware), u8 or s8.
        symmetric_activations: symmetric activation ranges (zero point at the middle).
        exclude: layer rules kept in float (``name:``, ``re:``, ``type:``; see Selector).
        calibration_size: examples used for calibration (static mode).
        percentile: the percentile of the percentile method.
        block_size: block of the int4 weight scales.
        fuse_transformer: fuse attention/LayerNorm/GELU with ONNX Runtime's transformer
            optimizer before quantizing (transformer encoders only).
        max_drop: the largest metric drop allowed; layers are reverted to float until it holds.
        relative_drop: ``max_drop`` is a fraction of the float metric rather than absolute.
        qat_epochs, qat_lr: the quantization-aware fine-tuning (qat mode; data = ``calib``).
        learn_scales: learn activation scales during QAT (LSQ) instead of keeping observed ones.
        smooth_alpha: SmoothQuant strength (e.g. 0.5) for LayerNorm -> Linear pairs of torch
            models in int8 modes, applied only where it is exact (pre-LN transformers); off by
            default: compare the reported fidelity with and without it.
        outlier_aware: on fused transformer encoders (int8 modes), fold SmoothQuant into the
            ONNX graph (alpha = ``smooth_alpha`` or 0.7; exact in pre-LN and post-LN blocks) and
            give each FFN's ``outlier_channels`` largest hidden channels their own int8 range
            (``slimkit.quantize.encoder_graph``); statistics come from ``calib`` (else the
            evaluation data, else synthetic inputs).
        outlier_channels: how many FFN hidden channels get their own range (0: none).
        equalize: cross-layer equalization + bias correction of torch CNNs in static mode
            (``slimkit.quantize.equalize``): ``auto`` tries it on models with depthwise
            convolution pairs and keeps it only when the metric (then SQNR) is better; ``on``
            always applies it; ``off`` never.
    """

    mode: QuantMode = QuantMode.DYNAMIC
    per_channel: bool = True
    method: CalibMethod = CalibMethod.MINMAX
    activation_type: ActivationType = ActivationType.AUTO
    symmetric_activations: bool = False
    exclude: tuple[str, ...] = ()
    calibration_size: int = 128
    percentile: float = 99.999
    block_size: int = 32
    fuse_transformer: bool = True
    max_drop: float | None = None
    relative_drop: bool = False
    qat_epochs: int = 2
    qat_lr: float = 1e-4
    learn_scales: bool = False
    smooth_alpha: float | None = None
    equalize: Equalize = Equalize.AUTO
    outlier_aware: bool = True
    outlier_channels: int = 8

    def __post_init__(self) -> None:
        coerce_enums(self, {"mode": QuantMode, "method": CalibMethod,
                            "activation_type": ActivationType,
                            "equalize": Equalize})
        Selector(tuple(self.exclude))  # validates the rules' syntax
        if self.calibration_size < 1:
            raise InputError("calibration_size must be >= 1")
        if not 50.0 < self.percentile <= 100.0:
            raise InputError("percentile must be in (50, 100]")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise InputError("block_size must be a power of two >= 16")
        if self.smooth_alpha is not None and not 0.0 < self.smooth_alpha < 1.0:
            raise InputError("smooth_alpha must be in (0, 1), or None to turn it off")
        if isinstance(self.outlier_channels, bool) or not isinstance(self.outlier_channels, int) \
                or self.outlier_channels < 0:
            raise InputError("outlier_channels must be an integer >= 0 (0 turns the split off)")
        if self.qat_epochs < 0 or not self.qat_lr > 0:
            raise InputError("qat_epochs must be >= 0 and qat_lr > 0")
        if self.max_drop is not None and not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise InputError("max_drop must be a finite number >= 0")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)
