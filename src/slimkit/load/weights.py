"""Weight files in: ``.safetensors``, or ``.pt``/``.pth`` through ``torch.load(weights_only=True)``.

A pickle that would run code is refused by torch's restricted unpickler and never executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from slimkit.errors import ModelLoadError
from slimkit.io import require_file

PICKLE_SUFFIXES = (".pt", ".pth", ".bin")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors or (weights-only) torch file."""
    file = require_file(path, "weights file")
    if file.suffix == ".safetensors":
        return _read_safetensors(file)
    if file.suffix in PICKLE_SUFFIXES:
        return _read_torch(file)
    raise ModelLoadError(
        f"weights file '{file}' has an unknown type; use .safetensors (preferred) or .pt/.pth"
    )


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read '{file}' as safetensors ({exc}); the file may be truncated or corrupt"
        ) from None


def _read_torch(file: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(str(file), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise ModelLoadError(
            f"refusing to load '{file}': it holds more than plain tensors and loading it would "
            f"run code ({first[:160]}); save the weights as a state dict or as .safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read '{file}' as a torch weights file: {exc}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ModelLoadError(f"'{file}' does not hold a state dict (a mapping of name -> tensor)")
    return loaded


def apply_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` strictly, with an error that lists what did not match."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}")
        if wrong:
            details.append(
                "shape mismatch " + ", ".join(
                    f"{k}: model {tuple(own[k].shape)} vs file {tuple(state[k].shape)}"
                    for k in wrong[:5]
                )
            )
        raise ModelLoadError(
            f"weights '{source}' do not fit the model: {'; '.join(details)}"
        )
    module.load_state_dict(state)
