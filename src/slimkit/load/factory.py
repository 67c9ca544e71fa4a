"""``package.module:factory`` (or ``path/to/file.py:factory``) specs: a callable that returns an
``nn.Module``, with optional weights and an input shape."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from slimkit.errors import ModelLoadError
from slimkit.load.weights import apply_state_dict, read_state_dict
from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec

FACTORY_RE = re.compile(r"^(?P<target>[\w.]+|.+\.py):(?P<attr>[A-Za-z_]\w*)$")


def is_factory_spec(spec: str) -> bool:
    return bool(FACTORY_RE.match(spec))


def load_factory(spec: str, weights: str | None, input_shape: tuple[int, ...] | None,
                 inputs: tuple[TensorSpec, ...] | None = None) -> Model:
    """Call the factory named by ``spec``, load ``weights`` into it and describe its inputs:
    ``inputs`` when given (checked against its ``forward``), else one float input of
    ``input_shape`` (or inferred from a first Linear layer)."""
    factory = _resolve(spec)
    try:
        module = factory()
    except Exception as exc:
        raise ModelLoadError(f"factory '{spec}' failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(
            f"factory '{spec}' returned {type(module).__name__}, not a torch.nn.Module"
        )
    if weights:
        apply_state_dict(module, read_state_dict(weights), weights)
    module.eval()
    accepts = positional_accepts(module)
    name = spec.rsplit(":", 1)[1]
    if inputs is not None:
        from slimkit.load.signature import fit_signature

        model = Model(name=name, source=spec, module=module, inputs=inputs, task=Task.OTHER,
                      meta={"weights": weights, "accepts": accepts})
        return fit_signature(model, inputs, "--input")
    shape = input_shape or _guess_input_shape(module, spec)
    specs = (TensorSpec("input", (DYNAMIC_BATCH, *shape[1:])),)
    return Model(name=name, source=spec, module=module, inputs=specs,
                 task=Task.OTHER, meta={"weights": weights, "accepts": accepts})


def positional_accepts(module: torch.nn.Module) -> dict[str, object]:
    """What a plain torch model accepts (see ``signature.py``): its forward's positional
    tensors; integer inputs are bounded by its smallest embedding table."""
    from slimkit.load.signature import forward_arity

    least, most, names = forward_arity(module)
    tables = [m.num_embeddings for m in module.modules() if isinstance(m, torch.nn.Embedding)]
    return {"kind": "positional", "min": max(least, 1), "max": max(most, 1), "names": names,
            "high": min(tables) if tables else None}


def _resolve(spec: str) -> Callable[[], object]:
    match = FACTORY_RE.match(spec)
    if not match:
        raise ModelLoadError(f"'{spec}' is not a factory spec (package.module:function)")
    target, attr = match["target"], match["attr"]
    try:
        if target.endswith(".py"):
            module = _import_file(Path(target))
        else:
            module = importlib.import_module(target)
    except ModelLoadError:
        raise
    except Exception as exc:  # ImportError, or the user's module failing on import
        raise ModelLoadError(
            f"cannot import '{target}' for factory '{spec}': {type(exc).__name__}: {exc}"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelLoadError(f"'{target}' has no callable named '{attr}' (from '{spec}')")
    return factory  # type: ignore[no-any-return]


def _import_file(path: Path) -> object:
    if not path.is_file():
        raise ModelLoadError(f"factory file '{path}' does not exist")
    name = f"_slimkit_user_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ModelLoadError(f"cannot import '{path}' as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def _guess_input_shape(module: torch.nn.Module, spec: str) -> tuple[int, ...]:
    """A (1, features) shape when the first layer with weights is Linear; otherwise ask."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear):
            return (1, layer.in_features)
        if isinstance(layer, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                              torch.nn.Embedding)):
            break
    raise ModelLoadError(
        f"cannot infer the inputs of '{spec}'; describe them, e.g. --input-shape 1x3x224x224 "
        "for one float input, or --input NAME:SHAPE:DTYPE per input (--input ids:1x16:int64)"
    )


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``."""
    try:
        dims = tuple(int(part) for part in text.lower().replace(",", "x").split("x"))
    except ValueError:
        dims = ()
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ModelLoadError(f"input shape '{text}' is not of the form 1x3x224x224")
    return dims
