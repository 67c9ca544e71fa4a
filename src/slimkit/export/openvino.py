"""Export to OpenVINO IR (``.xml`` + ``.bin``): the verified ONNX export converted by OpenVINO's
model converter, run in OpenVINO (f32 precision forced) and compared with the ONNX file before
the IR is written. OpenVINO is an optional extra: ``pip install 'slimkit[openvino]'``."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimkit._deps import require
from slimkit.data import Dataset, synthetic
from slimkit.errors import InputError, VerificationError
from slimkit.model import Model

ATOL, RTOL = 1e-4, 1e-3


@dataclass(frozen=True)
class IrExport:
    path: Path
    max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "max_abs_diff": self.max_abs_diff, "verified": True,
                "against": "ONNX Runtime on the verified ONNX export, OpenVINO at f32"}


def save_ir(ov_model: Any, path: Path) -> Path:
    """Write ``ov_model`` as ``path`` (.xml) and its .bin, each replaced atomically (the .bin
    first, so a reader never pairs a new .xml with an old .bin)."""
    from slimkit.io import check_output_path

    ov = require("openvino", "writing OpenVINO IR")
    out = check_output_path(path)
    with tempfile.TemporaryDirectory(prefix=".ir-", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        ov.save_model(ov_model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(staged, out)
    return out


def export_openvino(model: Model, path: str | Path, sample: Dataset | None = None) -> IrExport:
    """Convert ``model`` (torch or ONNX) to OpenVINO IR at ``path`` (``.xml``), verified.

    Example:
        >>> import tempfile, pathlib
        >>> from slimkit import load_model
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "m.xml"
        >>> export_openvino(load_model("builtin:digits-mlp"), out).path.suffix  # doctest: +SKIP
        '.xml'
    """
    ov = require("openvino", "exporting to OpenVINO IR")
    if not str(path).endswith(".xml"):
        raise InputError(f"OpenVINO IR path '{path}' must end with .xml (the .bin is written "
                         "beside it)")
    data = sample or synthetic(model.inputs, 3, seed=0, dynamic=24)
    with tempfile.TemporaryDirectory(prefix="slimkit-ir-") as tmp:
        onnx_model = _onnx(model, Path(tmp))
        staged = Path(tmp) / "model.xml"
        ov.save_model(ov.convert_model(str(onnx_model.onnx_path)), str(staged),
                      compress_to_fp16=False)
        reference = _first_outputs(onnx_model, data, "onnxruntime")
        got = _first_outputs(onnx_model.with_onnx(staged), data, "openvino")
        diff = float(np.max(np.abs(reference - got)))
        if not np.allclose(got, reference, atol=ATOL, rtol=RTOL):
            raise VerificationError(f"OpenVINO's conversion of '{model.name}' changed its "
                                    f"outputs by {diff:.3g} (> atol {ATOL}); no IR written")
        out = save_ir(ov.Core().read_model(str(staged)), Path(path))
    return IrExport(out, diff)


def _onnx(model: Model, folder: Path) -> Model:
    if model.onnx_path is not None:
        return model
    from slimkit.export.onnx import export_onnx

    return export_onnx(model, folder / f"{model.name}.onnx").model


def _first_outputs(model: Model, data: Dataset, runtime: str) -> np.ndarray:
    """The first output of ``model`` (an ONNX or IR file) on every example of ``data``."""
    from slimkit.runtime import open_session

    with open_session(model, runtime) as session:
        return np.concatenate([session.run(inputs)[0] for inputs, _ in data.batches(64)])
