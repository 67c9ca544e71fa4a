"""Diagnosis: per-layer SQNR of the quantized model's layer outputs against the float model's,
on the same inputs, and the error each layer adds (its SQNR drop from the layer before). The
layers that add the most error are the first candidates to keep in float."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.data import Dataset
from slimkit.evaluate.metrics import sqnr_db
from slimkit.selector import Layer


@dataclass(frozen=True)
class LayerError:
    layer: str
    type: str
    sqnr_db: float  # of this layer's output, quantized vs float model
    added_db: float  # SQNR lost at this layer (previous layer's SQNR - this one's)
    outlier_ratio: float  # max |activation| / 99th percentile, float model: > 10 means outliers
    outlier_channels: tuple[int, ...] = ()  # channels whose max |activation| > 10x the median

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "type": self.type, "sqnr_db": round(self.sqnr_db, 2),
                "added_db": round(self.added_db, 2), "outlier_ratio": round(self.outlier_ratio, 1),
                "outlier_channels": list(self.outlier_channels[:8])}


def layer_errors(float_path: Path, quant_path: Path, layers: list[Layer], data: Dataset,
                 input_names: tuple[str, ...], batch: int = 16) -> list[LayerError]:
    """SQNR of each layer's output tensor (named the same in both graphs) on ``data``."""
    import onnx

    float_proto = onnx.load(str(float_path))
    quant_proto = onnx.load(str(quant_path))
    outputs = {node.name: node.output[0] for node in float_proto.graph.node}
    float_tensors = {out for node in float_proto.graph.node for out in node.output}
    tracked = []
    for layer in layers:
        pair = _compared_tensors(quant_proto, layer.name, outputs.get(layer.name), float_tensors)
        if pair is not None:
            tracked.append((layer, *pair))
    ref = _run_with_outputs(float_proto, [t[1] for t in tracked], data, input_names, batch)
    got = _run_with_outputs(quant_proto, [t[2] for t in tracked], data, input_names, batch)
    result, previous = [], float("inf")
    for (layer, _, _), r, g in zip(tracked, ref, got, strict=True):
        sqnr = min(sqnr_db(r, g), 200.0)
        magnitude = np.abs(r)
        p99 = float(np.percentile(magnitude, 99)) or 1e-12
        added = max(min(previous, 200.0) - sqnr, 0.0)
        result.append(LayerError(layer.name, layer.type, sqnr, added,
                                 float(magnitude.max()) / p99, outlier_channels(r)))
        previous = sqnr
    return result


def outlier_channels(activation: np.ndarray, factor: float = 10.0) -> tuple[int, ...]:
    """Channels (axis 1 for 4-D conv maps, the last axis otherwise) whose max |value| exceeds
    ``factor`` times the median channel's, largest first.

    Example:
        >>> x = np.ones((4, 6)); x[:, 2] = 50.0
        >>> outlier_channels(x)
        (2,)
    """
    axis = 1 if activation.ndim == 4 else activation.ndim - 1
    moved = np.moveaxis(np.abs(activation), axis, -1).reshape(-1, activation.shape[axis])
    peaks = moved.max(axis=0)
    median = float(np.median(peaks)) or 1e-12
    hits = np.flatnonzero(peaks > factor * median)
    return tuple(int(i) for i in hits[np.argsort(-peaks[hits])])


def _compared_tensors(proto: Any, node_name: str, float_tensor: str | None,
                      float_tensors: set[str]) -> tuple[str, str] | None:
    """(float-graph tensor, quantized-graph tensor) holding the same values for a layer.

    Dynamic quantization keeps the layer's output name. In QDQ graphs the layer is followed by
    QuantizeLinear -> DequantizeLinear, and the quantizer may fold the activation after it (a
    Conv's output takes the following Relu's name, clipped by the u8 range): the reference is
    then the float graph's tensor of *that* name, the post-activation value, not the layer's
    own pre-activation output (comparing those read 2-5 dB on an int8 model that kept its
    accuracy)."""
    if float_tensor is None:
        return None
    produced = {out for node in proto.graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    node = next((n for n in proto.graph.node if n.name == node_name), None)
    raw = node.output[0] if node is not None else float_tensor
    reference = raw if raw in float_tensors else float_tensor
    tensor = raw
    for _ in range(2):  # layer -> QuantizeLinear -> DequantizeLinear
        nxt = [c for c in consumers.get(tensor, []) if c.op_type in ("QuantizeLinear",
                                                                     "DequantizeLinear")]
        if not nxt:
            break
        tensor = nxt[0].output[0]
    if tensor in produced and (node is not None or float_tensor in produced):
        return reference, tensor
    return None


def _run_with_outputs(proto: Any, tensors: list[str], data: Dataset,
                      input_names: tuple[str, ...], batch: int) -> list[np.ndarray]:
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    existing = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    with tempfile.TemporaryDirectory(prefix="slimkit-diag-") as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(model, str(path))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        chunks: list[list[np.ndarray]] = [[] for _ in tensors]
        for inputs, _ in data.batches(batch):
            values = session.run(tensors, {k: inputs[k] for k in input_names})
            for store, value in zip(chunks, values, strict=True):
                store.append(value)
    return [np.concatenate(c) for c in chunks]
