"""What the numbers were measured on: CPU, its SIMD flags, library versions, thread counts."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from slimkit.hardware import cpu_info


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """A JSON-ready description of this machine and the libraries that ran the numbers."""
    import torch


    return {
        "cpu": cpu_info(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "slimkit": _version("slimkit"),
        "torch": torch.__version__,
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "transformers": _version("transformers"),
        "torch_threads": torch.get_num_threads(),
    }
