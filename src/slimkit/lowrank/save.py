"""A low-rank model on disk: a folder with the plan (``lowrank-plan.json``: the factorised
layers and their ranks) and the weights (``model.safetensors``), never a pickled module.
Loading rebuilds the source architecture, replays the plan and loads the weights (checked by
their SHA-256)."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from slimkit.errors import InputError, ModelLoadError
from slimkit.io import atomic_path, check_output_path, require_file
from slimkit.load.formats import ModelFormat, register_format
from slimkit.lowrank.plan import apply_lowrank_plan, check_plan
from slimkit.model import Model

PLAN_FILE = "lowrank-plan.json"
WEIGHTS_FILE = "model.safetensors"


def save_lowrank(model: Model, folder: str | Path) -> Path:
    """Write the plan (from ``model.meta``) and the weights of a ``low_rank`` result into
    ``folder`` (created if its parent exists), weights first, each atomically; returns the
    folder."""
    from safetensors.torch import save

    plan = model.meta.get("lowrank_plan")
    if plan is None:
        raise InputError(f"'{model.name}' carries no low-rank plan; save the model that "
                         "slimkit.low_rank returned")
    out = Path(folder)
    if not out.is_dir():
        check_output_path(out)
        out.mkdir()
    state = model.require_module("saving a low-rank model").state_dict()
    payload = save({k: v.detach().contiguous().clone() for k, v in state.items()})
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        tmp.write_bytes(payload)
    document = {**plan, "weights": {"file": WEIGHTS_FILE,
                                    "sha256": hashlib.sha256(payload).hexdigest()}}
    with atomic_path(out / PLAN_FILE) as tmp:
        tmp.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return out


def is_lowrank_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_lowrank` (for ``load_model``)."""
    return (Path(path) / PLAN_FILE).is_file()


def load_lowrank(path: str | Path, base_model: Model | str | None = None) -> Model:
    """Load a model saved by :func:`save_lowrank`.

    Args:
        path: the folder, or its ``lowrank-plan.json``.
        base_model: the original architecture (a Model or a ``load_model`` spec); by default
            the source recorded in the plan. Only its architecture is used.

    Example:
        >>> import tempfile
        >>> from slimkit.testing import tiny_model
        >>> from slimkit.lowrank import LowRankConfig, low_rank
        >>> r = low_rank(tiny_model("mlp"), LowRankConfig(rule="rank", rank=2, verify=False))
        >>> folder = r.save(tempfile.mkdtemp() + "/lr")
        >>> load_lowrank(folder).module.fc1[0].out_features
        2
    """
    from safetensors.torch import load

    plan_path = Path(path) / PLAN_FILE if Path(path).is_dir() else Path(path)
    require_file(plan_path, "low-rank plan")
    try:
        document = check_plan(json.loads(plan_path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"'{plan_path}' is not a valid low-rank plan (JSON): {exc}") \
            from None
    except InputError as exc:
        raise ModelLoadError(f"'{plan_path}': {exc}") from None
    weights = plan_path.parent / Path(document.get("weights", {}).get("file",
                                                                      WEIGHTS_FILE)).name
    if not weights.is_file():
        raise ModelLoadError(f"the low-rank plan '{plan_path}' has no weights file "
                             f"'{weights}' beside it")
    payload = weights.read_bytes()
    if hashlib.sha256(payload).hexdigest() != document.get("weights", {}).get("sha256"):
        raise ModelLoadError(f"'{weights}' does not match the checksum in '{plan_path}': the "
                             "weights were changed or damaged; save the model again")
    base = _base(base_model, document)
    module = copy.deepcopy(base.require_module("loading a low-rank model"))
    try:
        apply_lowrank_plan(module, document)
        module.load_state_dict(load(payload), strict=True)
    except (InputError, RuntimeError) as exc:
        raise ModelLoadError(f"the low-rank model in '{plan_path}' does not fit the "
                             f"architecture of '{base.source}': {str(exc).splitlines()[0]}") \
            from None
    module.eval()
    plan = {k: v for k, v in document.items() if k != "weights"}
    return replace(base, module=module, name=f"{document['model'].get('name', base.name)}-lowrank",
                   source=str(plan_path.parent), meta={**base.meta, "lowrank_plan": plan})


def _base(base_model: Model | str | None, document: dict[str, Any]) -> Model:
    from slimkit.load import load_model

    if isinstance(base_model, Model):
        return base_model
    info = document.get("model", {})
    spec = base_model or info.get("source")
    if not spec:
        raise ModelLoadError("the low-rank plan names no source model; pass base_model")
    inputs = info.get("inputs") or []
    shape = None
    if len(inputs) == 1 and all(isinstance(d, int) for d in inputs[0].get("shape", [])[1:]):
        shape = (1, *inputs[0]["shape"][1:])
    try:
        return load_model(spec, input_shape=shape if _is_factory(spec) else None)
    except ModelLoadError as exc:
        raise ModelLoadError(f"cannot rebuild the architecture of the low-rank model from "
                             f"'{spec}' ({exc}); pass base_model") from None


def _is_factory(spec: str) -> bool:
    from slimkit.load.factory import is_factory_spec

    return not spec.startswith("builtin:") and is_factory_spec(spec)


def _is_format(spec: str, path: Path) -> bool:
    return is_lowrank_folder(path) or path.name == PLAN_FILE


FORMAT = register_format(ModelFormat(
    "lowrank", _is_format, lambda spec, path, options: load_lowrank(path), 50))
