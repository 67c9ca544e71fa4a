"""The ``.slim`` container: a compressed PyTorch model in one file, read back exactly.

Format, version 1
-----------------
A ``.slim`` file is a valid safetensors file holding two ``U8`` tensors and string metadata:

* ``__metadata__``: ``format`` = ``"slim"``, ``version`` = ``"1"``, ``manifest`` = ``"json"``
  or ``"deflate"`` (how the manifest bytes are stored: UTF-8 JSON, or that JSON compressed
  with raw DEFLATE, whichever is smaller), ``sha256`` = the hex SHA-256 of the manifest bytes
  followed by the payload bytes, as stored. A file whose checksum does not match is refused
  before anything is decoded.
* ``manifest``: the JSON manifest (below).
* ``payload``: the streams of every tensor, concatenated in manifest order.

The manifest is one JSON object:

* ``model``: ``name``, ``source`` (a ``load_model`` spec that rebuilds the architecture:
  ``builtin:NAME``, ``package.module:factory``, ...), ``inputs`` (``name``, ``shape``,
  ``dtype``), ``outputs`` (names), ``task``, and ``plan`` (a structured pruning plan replayed
  on the architecture, or null).
* ``tensors``: one entry per state-dict tensor, in order: ``name``, ``dtype`` (torch dtype
  name), ``shape``, ``layout`` and ``streams``; float32 tensors also have ``sparse`` and
  ``store``. Each stream is ``[codec, count, bits, nbytes]``: ``count`` symbols of ``bits``
  bits, coded with ``codec`` (``raw`` bit-packing, ``huffman``, ``zlib``, ``lzma``; see
  :mod:`slimkit.compact.codecs`) into ``nbytes`` bytes of the payload.

Layouts: float32 tensors use ``dense``, ``codebook`` or ``rows``, optionally ``sparse``
(see :mod:`slimkit.compact.layout`); other dtypes use ``bytes``: their little-endian bytes as
one 8-bit stream. Every layout is lossless: a loaded model computes exactly what the written
one did.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimkit.compact.codecs import ALL_CODECS, check_codecs, decode, encode_best
from slimkit.compact.layout import decode_float, encode_float
from slimkit.errors import ModelLoadError
from slimkit.io import atomic_path, require_file
from slimkit.load.formats import ModelFormat, register_format
from slimkit.model import Model, Task, TensorSpec

FILE_FORMAT, VERSION = "slim", "1"
SUFFIX = ".slim"


@dataclass
class SlimInfo:
    """What :func:`write_slim` wrote: the file, its real size on disk, and every tensor's layout."""

    path: Path
    file_bytes: int
    manifest_bytes: int
    payload_bytes: int
    tensors: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "file_bytes": self.file_bytes,
                "manifest_bytes": self.manifest_bytes, "payload_bytes": self.payload_bytes,
                "tensors": self.tensors}


def write_slim(model: Model, path: str | Path, *, plan: dict[str, Any] | None = None,
               codecs: tuple[str, ...] = ALL_CODECS) -> SlimInfo:
    """Write ``model``'s weights losslessly into a ``.slim`` file (atomically).

    Args:
        model: a torch model whose ``source`` rebuilds its architecture (``builtin:NAME`` or a
            factory spec); pruning masks must be baked in (``slimkit.prune.finalize``).
        path: the output file.
        plan: a structured pruning plan (``PrunePlan.to_dict()``) to replay on the
            architecture when loading.
        codecs: the stream codecs measured for every stream (the smallest output is kept).

    Example:
        >>> import tempfile
        >>> from slimkit.testing import tiny_model
        >>> info = write_slim(tiny_model("mlp"), tempfile.mkdtemp() + "/m.slim")
        >>> info.file_bytes == info.path.stat().st_size
        True
    """
    codecs = check_codecs(codecs)
    module = model.require_module("writing a .slim file")
    if any(name.endswith("_mask") for name, _ in module.named_buffers()):
        raise ModelLoadError(f"'{model.name}' still carries pruning masks; bake them first "
                             "with slimkit.prune.finalize")
    entries, blobs, rows = [], [], []
    for name, tensor in module.state_dict().items():
        entry, blob = _encode_tensor(tensor.detach().cpu(), codecs)
        entries.append({"name": name, "dtype": str(tensor.dtype).removeprefix("torch."),
                        "shape": list(tensor.shape), **entry})
        blobs.append(blob)
        rows.append({"tensor": name, "layout": entry["layout"],
                     "sparse": entry.get("sparse", False), "store": entry.get("store"),
                     "codecs": [s[0] for s in entry["streams"]], "bytes": len(blob)})
    document = {"model": _model_entry(model, plan), "tensors": entries}
    manifest_json = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    packed = _deflate(manifest_json)
    kind, manifest = ("deflate", packed) if len(packed) < len(manifest_json) else \
        ("json", manifest_json)
    payload = b"".join(blobs)
    out = _save(Path(path), manifest, payload, kind)
    return SlimInfo(out, out.stat().st_size, len(manifest), len(payload), rows)


def read_slim(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The manifest and the decoded state dict of a ``.slim`` file (checksum verified first).

    Raises ``ModelLoadError`` for a file that is not ``.slim``, truncated, or altered.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    file = require_file(path, ".slim file")
    raw = file.read_bytes()
    try:
        arrays = load(raw)
        meta = _metadata(raw)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"'{file}' is not a readable .slim file (truncated or damaged? "
                             f"{exc})") from None
    if meta.get("format") != FILE_FORMAT or set(arrays) != {"manifest", "payload"}:
        raise ModelLoadError(f"'{file}' is a safetensors file but not a .slim file")
    if meta.get("version") != VERSION:
        raise ModelLoadError(f"'{file}' is .slim version {meta.get('version')}; this slimkit "
                             f"reads version {VERSION}")
    manifest, payload = arrays["manifest"].tobytes(), arrays["payload"].tobytes()
    if hashlib.sha256(manifest + payload).hexdigest() != meta.get("sha256"):
        raise ModelLoadError(f"'{file}' fails its SHA-256 checksum: the file was changed or "
                             "damaged; nothing was loaded. Write it again")
    try:
        text = zlib.decompress(manifest, -15) if meta.get("manifest") == "deflate" else manifest
        document = json.loads(text)
        return document, _decode_tensors(document["tensors"], payload)
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise ModelLoadError(f"'{file}' passed its checksum but cannot be decoded ({exc}); "
                             "it was written by an incompatible writer") from None


def load_slim(path: str | Path) -> Model:
    """Rebuild the torch model stored in a ``.slim`` file: the architecture from the recorded
    source (and pruning plan), then every weight, checked to fit exactly.

    Example:
        >>> import tempfile, torch
        >>> from slimkit.testing import tiny_model
        >>> m = tiny_model("mlp")
        >>> info = write_slim(m, tempfile.mkdtemp() + "/m.slim")
        >>> loaded = load_slim(info.path)
        >>> torch.equal(loaded.module.fc1.weight, m.module.fc1.weight)
        True
    """
    document, state = read_slim(path)
    entry = document.get("model", {})
    module = _architecture(entry, path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"the weights in '{path}' do not fit the architecture of "
                             f"'{entry.get('source')}': {str(exc).splitlines()[0]}") from None
    module.eval()
    inputs = tuple(TensorSpec(i["name"], tuple(i["shape"]), i["dtype"])
                   for i in entry["inputs"])
    return Model(name=f"{entry['name']}", source=str(path), module=module, inputs=inputs,
                 output_names=tuple(entry["outputs"]), task=Task(entry["task"]),
                 meta={"compact": str(path), "base_source": entry["source"],
                       "base_plan": entry.get("plan")})


def is_slim_file(path: str | Path) -> bool:
    """Whether ``path`` names a ``.slim`` file (by suffix; the content is checked on load)."""
    return str(path).endswith(SUFFIX)


def _encode_tensor(tensor: torch.Tensor, codecs: tuple[str, ...]) -> tuple[dict[str, Any],
                                                                           bytes]:
    if tensor.dtype == torch.float32 and tensor.numel():
        encoded = encode_float(tensor.numpy(), codecs)
        return encoded.entry, encoded.data
    raw = np.frombuffer(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(),
                        np.uint8)
    name, blob, _ = encode_best(raw.astype(np.int64), 8, codecs)
    return {"layout": "bytes", "streams": [[name, len(raw), 8, len(blob)]]}, blob


def _decode_tensors(entries: list[dict[str, Any]], payload: bytes) -> dict[str, torch.Tensor]:
    state, at = {}, 0
    for entry in entries:
        nbytes = sum(int(s[3]) for s in entry["streams"])
        data = payload[at:at + nbytes]
        if len(data) != nbytes:
            raise ValueError(f"tensor '{entry['name']}' runs past the payload")
        at += nbytes
        shape = tuple(int(d) for d in entry["shape"])
        dtype = getattr(torch, entry["dtype"])
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype '{entry['dtype']}'")
        if entry["layout"] == "bytes":
            codec, count, bits, _ = entry["streams"][0]
            raw = decode(codec, data, int(count), int(bits)).astype(np.uint8).tobytes()
            tensor = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype)
            state[entry["name"]] = tensor.reshape(shape).clone()
        else:
            state[entry["name"]] = torch.from_numpy(decode_float(entry, data, shape))
    if at != len(payload):
        raise ValueError(f"{len(payload) - at} payload bytes belong to no tensor")
    return state


def _model_entry(model: Model, plan: dict[str, Any] | None) -> dict[str, Any]:
    """What rebuilds the architecture; a model loaded from a ``.slim`` file keeps the source
    and plan it was built from (not the file's path)."""
    source = model.meta.get("base_source", model.source)
    plan = plan if plan is not None else model.meta.get("base_plan")
    return {"name": model.name, "source": source,
            "inputs": [spec.to_dict() for spec in model.inputs],
            "outputs": list(model.output_names), "task": model.task.value, "plan": plan}


def _architecture(entry: dict[str, Any], path: str | Path) -> torch.nn.Module:
    """A fresh module of the recorded architecture (built-in digits models are built, never
    trained: their weights come from the file)."""
    import copy

    from slimkit.load import load_model
    from slimkit.zoo import ZOO

    source = str(entry.get("source") or "")
    name = source.removeprefix("builtin:")
    try:
        if source.startswith("builtin:") and name in ZOO:
            module = ZOO.get(name).factory()
        else:
            shape = tuple(entry["inputs"][0]["shape"]) if len(entry["inputs"]) == 1 else None
            batch1 = (1, *shape[1:]) if shape and all(isinstance(d, int) for d in shape[1:]) \
                else None
            module = load_model(source, input_shape=batch1).require_module("loading .slim")
    except ModelLoadError as exc:
        raise ModelLoadError(f"'{path}' needs the architecture '{source}', which cannot be "
                             f"built here: {exc}") from None
    if entry.get("plan"):
        from slimkit.graph.plan import PrunePlan, apply_plan

        module = apply_plan(copy.deepcopy(module), PrunePlan.from_dict(entry["plan"]))
    return module


def _save(path: Path, manifest: bytes, payload: bytes, kind: str) -> Path:
    from safetensors.numpy import save

    digest = hashlib.sha256(manifest + payload).hexdigest()
    data = save({"manifest": np.frombuffer(manifest, np.uint8),
                 "payload": np.frombuffer(payload, np.uint8)},
                metadata={"format": FILE_FORMAT, "version": VERSION, "manifest": kind,
                          "sha256": digest})
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _metadata(raw: bytes) -> dict[str, str]:
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    meta = header.get("__metadata__", {})
    return meta if isinstance(meta, dict) else {}


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return packer.compress(data) + packer.flush()


FORMAT = register_format(ModelFormat(
    "slim", lambda spec, _: spec.endswith(SUFFIX), lambda spec, path, options: load_slim(path),
    30))
