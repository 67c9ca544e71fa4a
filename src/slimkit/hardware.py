"""The CPU this process runs on: its model, core count and the SIMD flags that decide which
int8, bf16 and fp16 kernels can pay (VNNI, AVX-512, AMX, Arm dot products)."""

from __future__ import annotations

import os
import platform
from typing import Any

# the flags that decide which int8 / fp16 kernels can pay off on x86 and Arm
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16",
              "amx_bf16", "f16c",
              "asimd", "asimddp", "i8mm", "sve")


def cpu_info() -> dict[str, Any]:
    """CPU model name, core count and SIMD flags (Linux /proc/cpuinfo; platform elsewhere)."""
    name, flags = platform.processor() or platform.machine(), set()
    ident: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    name = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                elif key in ("cpu family", "model", "stepping", "cpu MHz") and key not in ident:
                    ident[key] = value.strip()  # "AMD EPYC" alone cannot tell Zen 1 from Zen 3
                if not line.strip() and flags:
                    break  # the first processor tells all
    except OSError:
        pass
    return {"model": name, "cores": os.cpu_count(), "arch": platform.machine(),
            "family": ident.get("cpu family"), "model_number": ident.get("model"),
            "stepping": ident.get("stepping"), "mhz": ident.get("cpu MHz"),
            "simd": [f for f in SIMD_FLAGS if f in flags]}


def has_int8_dot_product(cpu: dict[str, Any] | None = None) -> bool:
    """Whether the CPU has int8 dot-product instructions (VNNI, AMX or Arm dotprod)."""
    simd = set((cpu or cpu_info())["simd"])
    return bool(simd & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
