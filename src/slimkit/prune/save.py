"""A pruned model on disk: a folder with the plan (``prune-plan.json``) and the weights
(``model.safetensors``), never a pickled module. Loading rebuilds the architecture from the
base model, replays the plan and loads the weights (checked by their SHA-256)."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from slimkit.errors import ModelLoadError
from slimkit.graph.masks import bake_masks, copy_masked, has_masks, weights_bytes
from slimkit.graph.plan import PrunePlan, apply_plan
from slimkit.io import atomic_path, check_output_path, require_file
from slimkit.load.formats import ModelFormat, register_format
from slimkit.model import Model, TensorSpec
from slimkit.prune.attention import pruned_meta

PLAN_FILE = "prune-plan.json"
WEIGHTS_FILE = "model.safetensors"
BASE_FOLDER = "base"  # a Hugging Face model's config + tokenizer: the folder rebuilds alone


def save_pruned(model: Model, plan: PrunePlan, folder: str | Path) -> Path:
    """Write ``plan`` and the weights of ``model`` into ``folder`` (created if its parent
    exists); masks are baked into the saved weights. Returns the plan file's path.

    The weights are written first and the plan last, each atomically: a folder with a plan
    always has its weights.
    """
    out = Path(folder)
    if not out.is_dir():
        check_output_path(out)
        out.mkdir()
    module = model.require_module("saving a pruned model")
    if has_masks(module):
        module = bake_masks(copy_masked(module))
    payload = weights_bytes(module)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        tmp.write_bytes(payload)
    _save_base(model, out)
    document = plan.to_dict()
    document["weights"] = {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(payload).hexdigest()}
    with atomic_path(out / PLAN_FILE) as tmp:
        tmp.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return out / PLAN_FILE


def is_pruned_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_pruned` (for ``load_model``)."""
    return (Path(path) / PLAN_FILE).is_file()


def load_pruned(path: str | Path, base_model: Model | str | None = None) -> Model:
    """Load a pruned model saved by :func:`save_pruned`.

    Args:
        path: the folder, or its ``prune-plan.json``.
        base_model: the unpruned architecture (a Model or a ``load_model`` spec); by default
            the source recorded in the plan. Only its architecture is used: the weights come
            from the saved file.

    Example:
        >>> import tempfile
        >>> from slimkit.testing import tiny_model
        >>> from slimkit.prune import PruneConfig, prune
        >>> result = prune(tiny_model("cnn"), PruneConfig(ratio=0.5, round_to=2))
        >>> folder = result.save(tempfile.mkdtemp() + "/pruned")
        >>> load_pruned(folder, tiny_model("cnn")).module.conv.out_channels
        4
    """
    from safetensors.torch import load

    plan_path = Path(path) / PLAN_FILE if Path(path).is_dir() else Path(path)
    require_file(plan_path, "pruning plan")
    document = _read_json(plan_path)
    plan = PrunePlan.from_dict(document)
    weights = _weights_file(plan_path, document)
    payload = weights.read_bytes()
    expected = document.get("weights", {}).get("sha256")
    if expected and hashlib.sha256(payload).hexdigest() != expected:
        raise ModelLoadError(f"'{weights}' does not match the checksum in '{plan_path}': the "
                             "weights were changed or damaged; save the pruned model again")
    base = _base(base_model, plan, plan_path.parent / BASE_FOLDER)
    module = apply_plan(copy.deepcopy(base.require_module("loading a pruned model")), plan)
    try:
        module.load_state_dict(load(payload), strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"the weights in '{weights}' do not fit the pruned architecture "
                             f"of '{base.source}': {str(exc).splitlines()[0]}") from None
    module.eval()
    return replace(base, module=module, name=f"{plan.model.get('name', base.name)}-pruned",
                   source=str(plan_path.parent),
                   meta=pruned_meta({**base.meta, "pruned": plan.mode}, plan))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"'{path}' is not a valid pruning plan (JSON): {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"'{path}' is not a pruning plan")
    return data


def _weights_file(plan_path: Path, document: dict[str, Any]) -> Path:
    name = document.get("weights", {}).get("file", WEIGHTS_FILE)
    weights = plan_path.parent / Path(name).name  # only beside the plan, never elsewhere
    if not weights.is_file():
        raise ModelLoadError(f"the pruning plan '{plan_path}' has no weights file '{weights}' "
                             "beside it")
    return weights


def _input_shape(plan: PrunePlan) -> tuple[int, ...] | None:
    """The single input's shape recorded in the plan (batch 1), for factory specs."""
    inputs = plan.model.get("inputs") or []
    if len(inputs) != 1:
        return None
    dims = inputs[0].get("shape", [])[1:]
    if not dims or not all(isinstance(d, int) for d in dims):
        return None
    return (1, *dims)


def _inputs(plan: PrunePlan) -> tuple[TensorSpec, ...] | None:
    """The input signature recorded in the plan of a factory model that one shape does not
    describe (several inputs, or integer ones); None otherwise."""
    from slimkit.load.factory import is_factory_spec

    inputs = plan.model.get("inputs") or []
    source = str(plan.model.get("source") or "")
    simple = len(inputs) == 1 and inputs[0].get("dtype", "float32") == "float32"
    if simple or not inputs or not is_factory_spec(source) or source.startswith("builtin:"):
        return None
    return tuple(TensorSpec(str(i["name"]), tuple(i["shape"]), str(i.get("dtype", "float32")))
                 for i in inputs)


def _save_base(model: Model, out: Path) -> None:
    """Write a Hugging Face model's architecture (config, tokenizer) into ``out/base``
    (through a temporary folder; a previous one is replaced)."""
    import shutil
    import tempfile

    from slimkit.load.hf import save_hf_architecture

    with tempfile.TemporaryDirectory(dir=out, prefix=".base-") as tmp:
        if save_hf_architecture(model, Path(tmp) / BASE_FOLDER):
            shutil.rmtree(out / BASE_FOLDER, ignore_errors=True)
            (Path(tmp) / BASE_FOLDER).rename(out / BASE_FOLDER)


def _base(base_model: Model | str | None, plan: PrunePlan, saved: Path) -> Model:
    from slimkit.load import load_model

    if isinstance(base_model, Model):
        return base_model
    if base_model is None and (saved / "config.json").is_file():
        from slimkit.load.hf import load_hf_architecture

        return load_hf_architecture(saved, plan.model.get("name"))
    spec = base_model or plan.model.get("source")
    if not spec:
        raise ModelLoadError("the pruning plan names no source model; pass base_model")
    inputs = _inputs(plan)
    try:
        if inputs is not None:  # a factory with several inputs, or integer ones
            return load_model(spec, inputs=inputs)
        return load_model(spec, input_shape=_input_shape(plan))
    except ModelLoadError as exc:
        raise ModelLoadError(f"cannot rebuild the architecture of the pruned model from "
                             f"'{spec}' ({exc}); pass base_model") from None


def _is_format(spec: str, path: Path) -> bool:
    return is_pruned_folder(path) or path.name == PLAN_FILE


FORMAT = register_format(ModelFormat(
    "pruned", _is_format, lambda spec, path, options: load_pruned(path), 40))
