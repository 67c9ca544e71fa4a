"""ONNX files in: checked, with their input spec read from the graph."""

from __future__ import annotations

from pathlib import Path

from slimkit.errors import ModelLoadError
from slimkit.io import require_file
from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec

# ONNX TensorProto element types -> numpy dtype names (the ones models take as inputs)
_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def load_onnx(path: str | Path) -> Model:
    """Load and check an ONNX file; the file itself is only read."""
    import onnx

    file = require_file(path, "ONNX model")
    try:
        proto = onnx.load(str(file), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError...
        raise ModelLoadError(
            f"'{file}' is not a valid ONNX model ({type(exc).__name__}: "
            f"{str(exc).strip()[:200] or 'no detail'}); the file may be truncated or corrupt"
        ) from None
    return Model(
        name=file.stem,
        source=str(file),
        onnx_path=file,
        inputs=_input_specs(proto),
        output_names=tuple(out.name for out in proto.graph.output),
        task=Task.OTHER,
        meta={"opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                           default=None)},
    )


def _input_specs(proto: object) -> tuple[TensorSpec, ...]:
    graph = proto.graph  # type: ignore[attr-defined]
    initializers = {init.name for init in graph.initializer}
    specs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims: list[int | str] = []
        for i, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or (DYNAMIC_BATCH if i == 0 else f"dim{i}"))
        dtype = _DTYPES.get(tensor.elem_type, "float32")
        specs.append(TensorSpec(value.name, tuple(dims), dtype))
    return tuple(specs)
