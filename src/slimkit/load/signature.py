"""A model's input signature, described once and used by every command: parsed from
``--input NAME:SHAPE:DTYPE`` strings (:func:`parse_input`), read from a sample ``.npz`` file
(:func:`read_sample`), or declared by the model itself (a Hugging Face config, an ONNX graph).
:func:`fit_signature` checks a given signature against what the model accepts; every error
names the inputs the model wants.

What a model accepts is recorded by its loader in ``model.meta["accepts"]``:

- ``{"kind": "exact"}``: exactly its declared inputs (an ONNX graph); a signature may fix
  dynamic axes, never rename or retype them;
- ``{"kind": "named", "required": [...]}``: any subset of its declared inputs that holds the
  required ones, in the declared order (Hugging Face models);
- ``{"kind": "positional", "min": m, "max": n, "names": [...]}``: ``m`` to ``n`` positional
  tensors of any name (a factory's ``forward``).
"""

from __future__ import annotations

import inspect
import re
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import DataError, InputError
from slimkit.model import DYNAMIC_BATCH, Model, TensorSpec

DTYPES = {"float32": "float32", "float": "float32", "fp32": "float32", "f32": "float32",
          "float16": "float16", "fp16": "float16", "half": "float16", "float64": "float64",
          "double": "float64", "int64": "int64", "long": "int64", "int32": "int32",
          "int": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool"}
INPUT_FORMAT = "NAME:SHAPE[:DTYPE], e.g. input_ids:1x16:int64 or image:1x3x224x224:float32"
_NAME = re.compile(r"^[A-Za-z_][\w.]*$")
_DIM = re.compile(r"^(\d+|[A-Za-z_]\w*)$")


def parse_input(text: str) -> TensorSpec:
    """One ``--input`` string as a TensorSpec; the first axis is the batch (dynamic), a named
    axis (``1xseqx768``) is dynamic too; an optional fourth field bounds integer values.

    Example:
        >>> parse_input("ids:1x16:int64")
        TensorSpec(name='ids', shape=('batch', 16), dtype='int64', high=None, dynamic_range=None)
        >>> parse_input("x:1x3x32x32").dtype
        'float32'
    """
    parts = text.strip().split(":")
    if len(parts) < 2 or len(parts) > 4 or not _NAME.match(parts[0]):
        raise InputError(f"--input '{text}' does not parse; write {INPUT_FORMAT}")
    dims = parts[1].lower().replace(",", "x").split("x") if parts[1] else []
    if not dims or not all(_DIM.match(d) for d in dims) or any(d == "0" for d in dims):
        raise InputError(f"--input '{text}': shape '{parts[1]}' is not of the form 1x16 "
                         f"(positive sizes or axis names, separated by x); write {INPUT_FORMAT}")
    dtype = DTYPES.get(parts[2].lower()) if len(parts) > 2 else "float32"
    if dtype is None:
        raise InputError(f"--input '{text}': unknown dtype '{parts[2]}'; use one of "
                         f"{sorted(set(DTYPES.values()))}")
    high = None
    if len(parts) == 4:
        if not parts[3].isdigit() or int(parts[3]) < 1 or not dtype.startswith(("int", "uint")):
            raise InputError(f"--input '{text}': the fourth field bounds integer values "
                             "(a positive integer, e.g. ids:1x16:int64:30522)")
        high = int(parts[3])
    shape = (DYNAMIC_BATCH, *(int(d) if d.isdigit() else d for d in dims[1:]))
    return TensorSpec(parts[0], shape, dtype, high)


def parse_inputs(texts: list[str] | tuple[str, ...]) -> tuple[TensorSpec, ...]:
    """Every ``--input`` string; a name given twice is an error."""
    specs = tuple(parse_input(t) for t in texts)
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"--input names {twice} more than once; give each input once")
    return specs


def read_sample(path: str | Path) -> tuple[tuple[TensorSpec, ...], dict[str, np.ndarray]]:
    """The signature of a sample ``.npz`` file (one array per input, first axis = examples;
    an array named ``labels`` is not an input) and its arrays."""
    file = Path(path).expanduser()
    if file.suffix != ".npz" or not file.is_file():
        raise InputError(f"sample inputs '{file}' must be an existing .npz file (one array per "
                         "input, named after it)")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files if name != "labels"}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read '{file}' as a .npz file ({type(exc).__name__})") from None
    if not arrays:
        raise DataError(f"sample inputs '{file}' hold no input arrays")
    specs = []
    for name, array in arrays.items():
        if array.ndim < 1 or array.dtype.name not in set(DTYPES.values()):
            raise DataError(f"sample input '{name}' in '{file}' is a {array.dtype.name} array "
                            f"of shape {array.shape}; inputs are numeric arrays, first axis = "
                            "examples")
        specs.append(TensorSpec(name, (DYNAMIC_BATCH, *array.shape[1:]), array.dtype.name))
    return tuple(specs), arrays


def describe(specs: tuple[TensorSpec, ...] | list[TensorSpec]) -> str:
    """``input_ids (int64, batch x sequence), attention_mask (...)``: for error messages.

    Example:
        >>> describe([TensorSpec("x", ("batch", 3, 8, 8))])
        'x (float32, batch x 3 x 8 x 8)'
    """
    return ", ".join(f"{s.name} ({s.dtype}, {' x '.join(str(d) for d in s.shape)})"
                     for s in specs)


def forward_arity(module: Any) -> tuple[int, int, list[str]]:
    """How many positional tensors ``module.forward`` takes: (required, most, names); most is
    large when it takes ``*args``."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return 1, 1 << 20, []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(1 for p in positional if p.default is p.empty)
    most = 1 << 20 if any(p.kind == p.VAR_POSITIONAL for p in params) else len(positional)
    return required, most, [p.name for p in positional]


def fit_signature(model: Model, given: tuple[TensorSpec, ...], source: str) -> Model:
    """``model`` taking the inputs ``given`` (from ``source``: "--input", a sample file), after
    checking them against what it accepts (see the module docstring)."""
    accepts = model.meta.get("accepts") or {"kind": "exact"}
    kind = accepts.get("kind")
    if kind == "positional":
        return _fit_positional(model, given, source, accepts)
    declared = {s.name: s for s in model.inputs}
    unknown = [s.name for s in given if s.name not in declared]
    if unknown:
        raise InputError(f"{source} names {unknown}, which '{model.name}' does not take; it "
                         f"takes {describe(model.inputs)}")
    wanted = [s.name for s in model.inputs] if kind == "exact" else accepts.get("required", [])
    missing = [n for n in wanted if n not in {s.name for s in given}]
    if missing:
        raise InputError(f"{source} lacks {missing}; '{model.name}' needs them (it takes "
                         f"{describe(model.inputs)})")
    by_name = {s.name: s for s in given}
    fitted = tuple(_merge(declared[n], by_name[n], model.name, source)
                   for n in declared if n in by_name)
    model = replace(model, inputs=fitted)
    rebind = getattr(model.module, "with_inputs", None)
    if kind == "named" and callable(rebind):  # a wrapper calling its model by input names
        model = replace(model, module=rebind(model.input_names))
    return model


def _merge(declared: TensorSpec, given: TensorSpec, model: str, source: str) -> TensorSpec:
    """The declared input with the sizes ``given`` fixes (its dynamic axes may be set, its
    fixed ones must agree, the dtype must match)."""
    if given.dtype != declared.dtype:
        raise DataError(f"input '{declared.name}' of '{model}' is {declared.dtype}; {source} "
                        f"gives {given.dtype}")
    if len(given.shape) != len(declared.shape):
        raise DataError(f"input '{declared.name}' of '{model}' has {len(declared.shape)} axes "
                        f"({' x '.join(map(str, declared.shape))}); {source} gives "
                        f"{len(given.shape)} ({' x '.join(map(str, given.shape))})")
    shape: list[int | str] = [declared.shape[0]]
    for i, (want, got) in enumerate(zip(declared.shape[1:], given.shape[1:], strict=True), 1):
        if isinstance(want, int) and isinstance(got, int) and want != got:
            raise DataError(f"axis {i} of input '{declared.name}' of '{model}' is {want}; "
                            f"{source} gives {got}")
        shape.append(got if isinstance(want, str) and isinstance(got, int) else want)
    return replace(declared, shape=tuple(shape))


def _fit_positional(model: Model, given: tuple[TensorSpec, ...], source: str,
                    accepts: dict[str, Any]) -> Model:
    least, most, names = accepts.get("min", 1), accepts.get("max", 1), accepts.get("names", [])
    if not least <= len(given) <= most:
        count = f"{least}" if least == most else f"{least} to {min(most, 99)}"
        takes = f" ({', '.join(names)})" if names else ""
        raise InputError(f"'{model.name}' takes {count} inputs{takes}; {source} gives "
                         f"{len(given)}: {describe(given)}")
    high = accepts.get("high")
    given = tuple(replace(s, high=s.high or high) if s.dtype.startswith("int") else s
                  for s in given)
    return replace(model, inputs=given)
