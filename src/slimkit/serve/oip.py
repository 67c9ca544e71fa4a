"""The Open Inference Protocol v2 (KServe v2, Triton's HTTP API) for tensor models.

Routes (all beside ``/predict``): ``GET /v2`` (server metadata), ``/v2/health/live``,
``/v2/health/ready``, ``/v2/models/{name}[/versions/1]`` (model metadata),
``/v2/models/{name}[/versions/1]/ready`` and ``POST /v2/models/{name}[/versions/1]/infer``.
An inference request's tensors (``name``, ``shape``, ``datatype``, ``data`` flat or nested)
are checked like a ``/predict`` body and go through the same dynamic batcher. Triton's binary
tensor extension is spoken too (``Inference-Header-Content-Length``; ``binary_data_size`` per
input; ``binary_data`` / ``binary_data_output`` for outputs), since ``tritonclient`` uses it by
default. Errors are ``{"error": message}`` with status 400 (404 for an unknown model or route).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np

from slimkit.model import TensorSpec
from slimkit.serve.codec import BadRequest, check

if TYPE_CHECKING:
    from slimkit.serve.server import InferenceServer

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
             "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32",
             "INT64": "int64", "FP16": "float16", "FP32": "float32", "FP64": "float64"}
NUMPY_TO_V2 = {np.dtype(v): k for k, v in DATATYPES.items()}
MODEL_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
                        r"(?P<rest>/ready|/infer)?$")
VERSION = "1"


@dataclass(frozen=True)
class V2Reply:
    """Status, body, content type and extra headers of one reply."""

    status: int
    body: bytes
    kind: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: dict[str, Any]) -> V2Reply:
        return cls(status, json.dumps(payload).encode())


def error(status: int, message: str) -> V2Reply:
    return V2Reply.json(status, {"error": message})


def handle_get(app: InferenceServer, path: str) -> V2Reply:
    """Health and metadata routes."""
    ready = not app.stopping.is_set()
    if path in ("/v2", "/v2/"):
        return V2Reply.json(200, {"name": "slimkit", "version": _version(), "extensions": [
            "binary_tensor_data"]})
    if path == "/v2/health/live":
        return V2Reply.json(200, {"live": True})
    if path == "/v2/health/ready":
        return V2Reply.json(200 if ready else 503, {"ready": ready})
    match = MODEL_PATH.match(path)
    if match is None or match["rest"] == "/infer":
        return error(404, f"no route GET {path}")
    if (missing := _unknown_model(app, match)) is not None:
        return missing
    if match["rest"] == "/ready":
        return V2Reply.json(200 if ready else 503, {"name": app.model.name, "ready": ready})
    return V2Reply.json(200, metadata(app))


def metadata(app: InferenceServer) -> dict[str, Any]:
    """The model metadata: name, versions, platform, inputs and outputs (-1: any size)."""
    model = app.model
    outputs = [{"name": n, "datatype": "FP32", "shape": [-1]} for n in model.output_names]
    return {"name": model.name, "versions": [VERSION],
            "platform": f"slimkit_{app.config.runtime}",
            "inputs": [{"name": s.name, "datatype": NUMPY_TO_V2[np.dtype(s.dtype)],
                        "shape": [d if isinstance(d, int) and d > 0 else -1 for d in s.shape]}
                       for s in model.inputs],
            "outputs": outputs}


def handle_infer(app: InferenceServer, path: str, body: bytes,
                 header_length: str | None) -> V2Reply:
    """``POST /v2/models/{name}/infer``: tensors in, through the batcher, tensors out."""
    match = MODEL_PATH.match(path)
    if match is None or match["rest"] != "/infer":
        return error(404, f"no route POST {path}; use /v2/models/{app.model.name}/infer")
    if (missing := _unknown_model(app, match)) is not None:
        return missing
    try:
        request, binary = _split(body, header_length)
        inputs = _inputs(request, binary, app.model.inputs)
        wanted = _wanted_outputs(request, app.model.output_names)
    except BadRequest as exc:
        return error(400, str(exc))
    status, result = app.infer(inputs)
    if isinstance(result, str):
        return error(status, result)
    named = dict(zip(app.model.output_names, result, strict=False))
    return _response(app.model.name, request.get("id"), named, wanted)


def _unknown_model(app: InferenceServer, match: re.Match[str]) -> V2Reply | None:
    name, version = unquote(match["name"]), match["version"]
    if name != app.model.name or version not in (None, VERSION):
        return error(404, f"unknown model '{name}'"
                          f"{f' version {version}' if version else ''}; this server has "
                          f"'{app.model.name}' version {VERSION}")
    return None


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """(the JSON request, the binary tensor data after it)."""
    try:
        n = len(body) if header_length is None else int(header_length)
        if not 0 <= n <= len(body):
            raise ValueError
        request = json.loads(body[:n])
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"the request is not valid JSON (or {HEADER_LENGTH} is not the "
                         "length of its JSON part)") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BadRequest('the request must be a JSON object with "inputs": [tensors]')
    return request, body[n:]


def _inputs(request: dict[str, Any], binary: bytes,
            specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    by_name = {s.name: s for s in specs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(request["inputs"]):
        name = tensor.get("name") if isinstance(tensor, dict) else None
        if name not in by_name or name in arrays:
            raise BadRequest(f"inputs[{i}] must be a tensor named one of {sorted(by_name)}, "
                             "each once")
        array, offset = _tensor(tensor, binary, offset)
        arrays[name] = check(by_name[name], array)
    missing = sorted(set(by_name) - set(arrays))
    if missing:
        raise BadRequest(f"inputs {missing} are missing; this model takes {sorted(by_name)}")
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data are not claimed by any "
                         "input's binary_data_size")
    if len({a.shape[0] for a in arrays.values()}) != 1:
        raise BadRequest("every input needs the same batch size (first axis)")
    return arrays


def _tensor(tensor: dict[str, Any], binary: bytes, offset: int) -> tuple[np.ndarray, int]:
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if datatype not in DATATYPES:
        raise BadRequest(f"input '{name}': datatype must be one of {sorted(DATATYPES)}, got "
                         f"{datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"input '{name}': shape must be a list of sizes >= 0")
    dtype = np.dtype(DATATYPES[datatype])
    size = int(np.prod(shape, dtype=np.int64))
    params = tensor.get("parameters") or {}
    if "binary_data_size" in params:
        n = params["binary_data_size"]
        if not isinstance(n, int) or n != size * dtype.itemsize or offset + n > len(binary):
            raise BadRequest(f"input '{name}': binary_data_size must be {size * dtype.itemsize} "
                             f"bytes ({datatype} x {shape}) within the body")
        return np.frombuffer(binary, dtype, size, offset).reshape(shape).copy(), offset + n
    try:
        flat = np.asarray(tensor.get("data"), dtype=dtype).reshape(-1)
    except (TypeError, ValueError):
        raise BadRequest(f"input '{name}': data must be {datatype} numbers") from None
    if flat.size != size:
        raise BadRequest(f"input '{name}': {flat.size} values do not fill shape {shape}")
    return flat.reshape(shape), offset


def _wanted_outputs(request: dict[str, Any], names: tuple[str, ...]) -> dict[str, bool]:
    """Output name -> whether it is sent as binary data."""
    everything_binary = bool((request.get("parameters") or {}).get("binary_data_output"))
    asked = request.get("outputs")
    if asked is None:
        return dict.fromkeys(names, everything_binary)
    wanted = {}
    for o in asked if isinstance(asked, list) else [None]:
        if not isinstance(o, dict) or o.get("name") not in names:
            raise BadRequest(f"outputs must name outputs of this model: {list(names)}")
        wanted[o["name"]] = bool((o.get("parameters") or {}).get("binary_data",
                                                                  everything_binary))
    return wanted


def _response(model: str, request_id: Any, outputs: dict[str, np.ndarray],
              wanted: dict[str, bool]) -> V2Reply:
    tensors, blobs = [], []
    for name, binary in wanted.items():
        array = np.ascontiguousarray(outputs[name])
        if array.dtype not in NUMPY_TO_V2:
            array = array.astype(np.float32)
        tensor: dict[str, Any] = {"name": name, "datatype": NUMPY_TO_V2[array.dtype],
                                  "shape": list(array.shape)}
        if binary:
            blobs.append(array.tobytes())
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    head: dict[str, Any] = {"model_name": model, "model_version": VERSION, "outputs": tensors}
    if request_id is not None:
        head["id"] = request_id
    header = json.dumps(head).encode()
    if not blobs:
        return V2Reply(200, header)
    return V2Reply(200, header + b"".join(blobs), "application/octet-stream",
                   {HEADER_LENGTH: str(len(header))})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slimkit")
    except PackageNotFoundError:
        return "0"
