"""How bench_int8.py makes the peers' int8 models: ONNX Runtime's own recipes and NNCF's, each
as its documentation recommends, from the same float export slimkit starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ort_dyn_pc(src: Path, out: Path) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    from slimkit.quantize.calibration import quiet
    with quiet():
        quantize_dynamic(src, out, per_channel=True)
    return out


def ort_static_best(src: Path, out: Path, calib: Any, names: tuple[str, ...]) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from slimkit.io import scratch_cwd
    from slimkit.quantize.calibration import DatasetReader, quiet
    pre = out.with_name("pre.onnx")
    with quiet(), scratch_cwd():
        quant_pre_process(str(src), str(pre))
        quantize_static(pre, out, DatasetReader(calib, names), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    return out


def nncf_int8(src: Path, out: Path, items: list[dict], transformer: bool) -> Path:
    import nncf
    import openvino as ov
    q = nncf.quantize(ov.convert_model(str(src)), nncf.Dataset(items), subset_size=len(items),
                      model_type=nncf.ModelType.TRANSFORMER if transformer else None)
    ov.save_model(q, str(out), compress_to_fp16=False)
    return out


def depthwise_convs(path: Path) -> list[str]:
    """Names of the depthwise Conv nodes (group == input channels > 1) of an ONNX file."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(path))
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    names = []
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = shapes.get(node.input[1]) if node.op_type == "Conv" else None
        if w and attrs.get("group", 1) > 1 and w[1] == 1:
            names.append(node.name)
    return names
