"""Request bodies to named arrays (checked against the model's inputs), outputs to JSON.

A JSON body is ``{"inputs": {"NAME": nested lists, ...}}`` or, for a one-input model,
``{"inputs": nested lists}``; every array has the batch axis first. A body with content type
``application/x-npy`` is one ``.npy`` array for a one-input model; ``application/x-npz`` is an
``.npz`` archive (``numpy.savez``) of arrays named like the inputs. Both are read without
pickle, and a compressed archive may not unpack to more than the body limit. A request with
``Accept: application/x-npz`` gets its outputs as an ``.npz`` archive instead of JSON. Inputs
that share
a named axis (``input_ids`` and ``attention_mask`` share ``sequence``) must agree on its size.
Anything that does not fit the model raises :class:`BadRequest`, which the server answers with
HTTP 400 and the message.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from slimkit.model import TensorSpec

NPY_TYPES = ("application/x-npy", "application/octet-stream")
NPZ_TYPES = ("application/x-npz", "application/zip")


class BadRequest(ValueError):
    """A request the model cannot run; its message goes back to the client with status 400."""


def decode(body: bytes, content_type: str, specs: tuple[TensorSpec, ...],
           max_bytes: int = 16 * 2**20) -> dict[str, np.ndarray]:
    """The checked, model-typed input arrays of a request body (an ``.npz`` body may unpack
    to ``max_bytes`` at most).

    Example:
        >>> spec = (TensorSpec("input", ("batch", 2)),)
        >>> decode(b'{"inputs": [[1, 2]]}', "application/json", spec)["input"].dtype
        dtype('float32')
    """
    kind = content_type.split(";")[0].strip()
    raw = _npy(body, specs) if kind in NPY_TYPES else _npz(body, specs, max_bytes) \
        if kind in NPZ_TYPES else _json(body, specs)
    arrays = {spec.name: check(spec, value) for spec, value in
              ((s, raw[s.name]) for s in specs)}
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise BadRequest(f"every input needs the same number of examples (batch axis); got "
                         f"{sizes}")
    _check_shared_axes(specs, arrays)
    return arrays


def _check_shared_axes(specs: tuple[TensorSpec, ...], arrays: dict[str, np.ndarray]) -> None:
    """Inputs with the same named axis (past the batch axis) must give it the same size."""
    seen: dict[str, tuple[str, int]] = {}
    for spec in specs:
        for axis, dim in enumerate(spec.shape):
            if axis == 0 or not isinstance(dim, str):
                continue
            size = arrays[spec.name].shape[axis]
            first = seen.setdefault(dim, (spec.name, size))
            if first[1] != size:
                raise BadRequest(f"inputs '{first[0]}' and '{spec.name}' share axis '{dim}' "
                                 f"but have sizes {first[1]} and {size}; they must be equal")


def _json(body: bytes, specs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "inputs" not in data:
        raise BadRequest('the body must be a JSON object {"inputs": ...}')
    inputs = data["inputs"]
    if not isinstance(inputs, dict):
        if len(specs) != 1:
            raise BadRequest(f"this model has inputs {[s.name for s in specs]}: send "
                             '{"inputs": {"NAME": [...], ...}}')
        inputs = {specs[0].name: inputs}
    missing = [s.name for s in specs if s.name not in inputs]
    extra = sorted(set(inputs) - {s.name for s in specs})
    if missing or extra:
        raise BadRequest(f"inputs must be exactly {[s.name for s in specs]}; missing {missing}, "
                         f"unknown {extra}")
    return dict(inputs)


def _npy(body: bytes, specs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    if len(specs) != 1:
        raise BadRequest(f"a .npy body carries one array, but this model has inputs "
                         f"{[s.name for s in specs]}; send JSON")
    try:
        return {specs[0].name: np.load(io.BytesIO(body), allow_pickle=False)}
    except (ValueError, OSError, EOFError) as exc:
        raise BadRequest(f"the body is not a .npy array (pickled objects are refused): "
                         f"{exc}") from None


def _npz(body: bytes, specs: tuple[TensorSpec, ...], max_bytes: int) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > max_bytes:
            raise BadRequest(f"the .npz body unpacks to {unpacked} bytes, over the "
                             f"{max_bytes} byte limit")
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            names = set(npz.files)
            missing = [s.name for s in specs if s.name not in names]
            extra = sorted(names - {s.name for s in specs})
            if missing or extra:
                raise BadRequest(f"the .npz arrays must be exactly {[s.name for s in specs]}; "
                                 f"missing {missing}, unknown {extra}")
            return {s.name: npz[s.name] for s in specs}
    except BadRequest:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BadRequest(f"the body is not an .npz archive of arrays (pickled objects are "
                         f"refused): {exc}") from None


def check(spec: TensorSpec, value: Any) -> np.ndarray:
    """``value`` as an array of ``spec``'s dtype and shape (any batch size >= 1), or BadRequest."""
    try:
        array = np.asarray(value)
    except ValueError:
        array = np.asarray(None, dtype=object)
    want = np.dtype(spec.dtype)
    expected = "[" + ", ".join("N" if i == 0 else str(d) for i, d in enumerate(spec.shape)) + "]"
    if array.dtype.kind not in "iuf" or (want.kind in "iu" and array.dtype.kind == "f"
                                          and not np.all(np.isfinite(array) & (array % 1 == 0))):
        kind = "integers" if want.kind in "iu" else "numbers"
        raise BadRequest(f"input '{spec.name}' must be {kind} ({spec.dtype}) in a regular "
                         f"(non-ragged) array of shape {expected}; got dtype {array.dtype}")
    if array.ndim != len(spec.shape) or array.shape[0] < 1 or any(
            isinstance(d, int) and d > 0 and i > 0 and array.shape[i] != d
            for i, d in enumerate(spec.shape)):
        raise BadRequest(f"input '{spec.name}' must have shape {expected} (N >= 1 examples, "
                         f"batch axis first); got {list(array.shape)}")
    return np.ascontiguousarray(array, dtype=want)


def response_type(accept: str) -> str:
    """The content type of a prediction reply: ``.npz`` if the client accepts it, else JSON."""
    kinds = {part.split(";")[0].strip() for part in accept.split(",")}
    return NPZ_TYPES[0] if kinds & set(NPZ_TYPES) else "application/json"


def encode(names: tuple[str, ...], outputs: list[np.ndarray],
           content_type: str = "application/json") -> bytes:
    """The response body: JSON ``{"outputs": {NAME: nested lists}}``, or an ``.npz`` archive
    of the outputs by name.

    Example:
        >>> body = encode(("y",), [np.ones((1, 2), np.float32)], "application/x-npz")
        >>> np.load(io.BytesIO(body), allow_pickle=False)["y"].tolist()
        [[1.0, 1.0]]
    """
    named: dict[str, Any] = dict(zip(names, outputs, strict=False))
    if content_type in NPZ_TYPES:
        buf = io.BytesIO()
        np.savez(buf, **named)
        return buf.getvalue()
    return json.dumps({"outputs": {n: o.tolist() for n, o in named.items()}}).encode()
