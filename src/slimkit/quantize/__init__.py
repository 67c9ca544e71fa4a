"""Quantization: dynamic and static int8, int4 weights and fp16, accuracy-aware, with a speed
preflight and proof of integer kernels."""

from slimkit.quantize.api import QuantizeResult, quantize
from slimkit.quantize.config import ActivationType, CalibMethod, QuantizeConfig, QuantMode

__all__ = ["ActivationType", "CalibMethod", "QuantMode", "QuantizeConfig", "QuantizeResult",
           "quantize"]
