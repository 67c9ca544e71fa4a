"""Checkpoints of a distillation run: tensors (student, adapters, best state, optimizer moments,
RNG) in ``checkpoint.safetensors`` and the rest (step, history, optimizer scalars) in
``checkpoint.json``, which records the SHA-256 of the tensors. Both are written atomically,
tensors first: a folder whose JSON exists always has matching tensors. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from slimkit.errors import InputError
from slimkit.io import atomic_path, check_output_path

TENSORS_FILE = "checkpoint.safetensors"
STATE_FILE = "checkpoint.json"
FORMAT = "slimkit-distill-checkpoint"


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor],
                    state: dict[str, Any]) -> None:
    """Write one checkpoint into ``folder`` (created when its parent exists)."""
    from safetensors.torch import save

    if not folder.is_dir():
        check_output_path(folder)
        folder.mkdir()
    payload = save({k: v.detach().contiguous().clone() for k, v in tensors.items()})
    with atomic_path(folder / TENSORS_FILE) as tmp:
        tmp.write_bytes(payload)
    document = {"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), **state}
    with atomic_path(folder / STATE_FILE) as tmp:
        tmp.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The checkpoint in ``folder``, or None when there is none; a damaged one is an error."""
    from safetensors.torch import load

    state_path, tensors_path = folder / STATE_FILE, folder / TENSORS_FILE
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"checkpoint '{state_path}' is not valid JSON ({exc}); delete the "
                         "folder to start afresh") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"'{state_path}' is not a slimkit distillation checkpoint")
    payload = tensors_path.read_bytes() if tensors_path.is_file() else b""
    if hashlib.sha256(payload).hexdigest() != state.get("sha256"):
        raise InputError(f"'{tensors_path}' is missing or does not match the checksum in "
                         f"'{state_path}'; delete the folder to start afresh")
    return load(payload), state


def optimizer_to_flat(optimizer: torch.optim.Optimizer,
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as tensors (``optim.<param>.<key>``) plus JSON scalars."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
              for g in sd["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        meta: dict[str, Any]) -> None:
    """Restore what :func:`optimizer_to_flat` wrote into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
