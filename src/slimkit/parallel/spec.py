"""What a worker is told to open: a model *spec* (plain, picklable data), never a pickled module.

A torch model given to an ONNX runtime is exported once, in the parent, and every worker opens
that one file. For the torch runtime each worker loads the spec itself and reports a fingerprint
of its weights; workers that disagree (a factory that is not seeded) stop the start-up, since
their outputs would differ from one another.

Nothing here imports torch or numpy at module level: a worker process imports this module
before it has pinned its thread counts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimkit.errors import InputError

if TYPE_CHECKING:
    import torch

    from slimkit.model import Model

# runtimes that open an ONNX file -> the module that registers each: a torch model is exported
# once for them, in the parent, and a worker imports only that module (not torch: seconds less)
ONNX_RUNTIMES = {"onnxruntime": "slimkit.runtime.onnxrt"}


@dataclass(frozen=True)
class ModelSpec:
    """The arguments of :func:`slimkit.load_model`, as data a worker process can receive.

    Example:
        >>> ModelSpec("slimkit.testing:tiny_cnn", input_shape=(1, 3, 8, 8)).load().name
        'tiny_cnn'
    """

    spec: str
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise InputError(f"a model spec is a non-empty string, got {self.spec!r}")
        if self.input_shape is not None and (
                len(self.input_shape) < 2 or any(int(d) < 1 for d in self.input_shape)):
            raise InputError(f"input_shape {self.input_shape} must be a full shape such as "
                             "(1, 3, 32, 32) with every dimension >= 1")

    @property
    def is_onnx(self) -> bool:
        return self.spec.endswith(".onnx")

    def load(self) -> Model:
        from slimkit.load import load_model

        return load_model(self.spec, weights=self.weights, input_shape=self.input_shape,
                          seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "weights": self.weights,
                "input_shape": None if self.input_shape is None else list(self.input_shape),
                "seed": self.seed}


def as_spec(model: str | os.PathLike[str] | ModelSpec | Model) -> tuple[ModelSpec, Model | None]:
    """The spec workers load, and the in-memory model when one was given."""
    from slimkit.model import Model

    if isinstance(model, ModelSpec):
        return model, None
    if isinstance(model, (str, os.PathLike)):
        return ModelSpec(os.fspath(model)), None
    if isinstance(model, Model):
        if model.onnx_path is not None:
            return ModelSpec(str(model.onnx_path)), model
        shape = model.inputs[0].concrete_shape(1) if len(model.inputs) == 1 else None
        return ModelSpec(model.source, weights=model.meta.get("weights"),
                         input_shape=shape if _is_factory(model.source) else None), model
    raise InputError(f"a data-parallel model is a spec string, a ModelSpec or a Model, "
                     f"not {type(model).__name__}")


def prepare(model: str | os.PathLike[str] | ModelSpec | Model, runtime: str,
            folder: Path) -> tuple[ModelSpec, str | None]:
    """The spec every worker opens and the weights fingerprint they must report (or None).

    For an ONNX runtime a torch model is exported into ``folder`` here, once. For the torch
    runtime an in-memory model is re-loaded in the workers from its ``source``; its fingerprint
    is then required, so a model changed after loading (pruned, fine-tuned) is refused rather
    than silently replaced by the original.
    """
    spec, given = as_spec(model)
    if runtime in ONNX_RUNTIMES:
        if spec.is_onnx:
            return spec, None
        from slimkit.export.onnx import export_onnx

        loaded = given if given is not None else spec.load()
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in loaded.name)
        return ModelSpec(str(export_onnx(loaded, folder / f"{name}.onnx").path)), None
    if spec.is_onnx:
        raise InputError(f"runtime '{runtime}' needs a PyTorch model, but '{spec.spec}' is an "
                         "ONNX file; use runtime='onnxruntime'")
    if given is not None:
        return spec, weights_fingerprint(given.require_module("the torch runtime"))
    return spec, None


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A SHA-256 over every parameter and buffer (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    try:
        return bytes(flat.view(torch.uint8).numpy().tobytes())
    except (RuntimeError, TypeError):  # quantized or otherwise unviewable tensors
        return repr(flat.tolist()).encode()


def _is_factory(source: str) -> bool:
    from slimkit.load.factory import is_factory_spec

    return not source.startswith("builtin:") and is_factory_spec(source)
