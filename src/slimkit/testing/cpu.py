"""Simulated CPUs for tests whose subject depends on this machine's measurements.

The advisor and the quantization preflight decide from two measurements: the CPU's SIMD flags
and the integer/float GEMM ratio of ONNX Runtime. A test about that decision injects both, so
it asserts the same thing on every CPU CI may run on. The profiles hold figures measured on the
two CPU classes seen here (ANCHORS.md): a Zen 1 without VNNI, where ORT's u8 x s8 GEMM runs at
fp32 speed, and a Zen 4 with AVX-512 VNNI, where it runs 4.2x fp32 and s8 x s8 0.27x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CpuProfile:
    """A CPU as the advisor and the preflight see it."""

    model: str
    simd: tuple[str, ...]
    gemm_u8s8: float  # ORT MatMulInteger u8 x s8 throughput over fp32 MatMul, 1 thread
    gemm_s8s8: float

    def cpu_info(self) -> dict[str, Any]:
        return {"model": self.model, "cores": 2, "arch": "x86_64", "simd": list(self.simd),
                "family": "23" if "avx512f" not in self.simd else "25", "model_number": "1"}


CPU_PROFILES = {
    "no-vnni": CpuProfile("AMD EPYC (Zen 1, simulated)", ("avx2", "fma", "f16c"), 1.0, 0.2),
    "vnni": CpuProfile("AMD EPYC (Zen 4, simulated)",
                       ("avx2", "fma", "avx512f", "avx512_vnni", "f16c"), 4.2, 0.27),
}


def simulate_cpu(monkeypatch: Any, profile: CpuProfile) -> None:
    """Make the advisor and the preflight see ``profile`` (undone with ``monkeypatch``).

    Example:
        >>> import pytest
        >>> mp = pytest.MonkeyPatch()
        >>> simulate_cpu(mp, CPU_PROFILES["vnni"])
        >>> import importlib
        >>> importlib.import_module("slimkit.quantize.preflight").gemm_ratios()
        (4.2, 0.27)
        >>> mp.undo()
    """
    import importlib

    # import_module: ``slimkit.quantize`` the attribute is the verb, not the package
    advise, environment, preflight = (importlib.import_module(f"slimkit.{name}") for name in
                                      ("advise.api", "hardware", "quantize.preflight"))

    def ratios(*_args: Any, **_kwargs: Any) -> tuple[float, float]:
        return profile.gemm_u8s8, profile.gemm_s8s8

    monkeypatch.setattr(environment, "cpu_info", profile.cpu_info)
    monkeypatch.setattr(preflight, "cpu_info", profile.cpu_info)
    monkeypatch.setattr(preflight, "gemm_ratios", ratios)
    monkeypatch.setattr(advise, "gemm_ratio_median", ratios)
