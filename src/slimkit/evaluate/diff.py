"""Behaviour diff: what changed between an original model and its compressed version, beyond
one accuracy number. Top-1 agreement, per-class accuracy deltas, the examples whose prediction
flipped (with both confidences), per-layer output SQNR along the network, and for encoders the
nearest neighbours that changed.

Per-layer SQNR compares like with like: module outputs (forward hooks) when both are torch
models of the same structure; otherwise ONNX intermediate tensors whose names match in both
graphs (a torch original is exported first). When nothing matches, the diff says so.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.data import Dataset
from slimkit.errors import DataError
from slimkit.evaluate.metrics import embedding_fidelity, output_fidelity, predict, sqnr_db
from slimkit.model import Model, Task

log = logging.getLogger(__name__)
DQ_SUFFIX = "_DequantizeLinear_Output"  # onnxruntime.quantization's name for dequantized copies
LAYER_EXAMPLES = 32  # examples for the per-layer SQNR (intermediate tensors are large)


@dataclass
class BehaviourDiff:
    """The diff; ``to_dict()`` is the ``behaviour_diff`` section of the HTML report."""

    original: str
    compressed: str
    examples: int
    fidelity: dict[str, float]
    top1_agreement: float | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    per_class: list[dict[str, Any]] = field(default_factory=list)
    flipped: list[dict[str, Any]] | None = None
    flipped_total: int = 0
    embedding: dict[str, float] = field(default_factory=dict)
    neighbours: list[dict[str, Any]] = field(default_factory=list)
    layer_sqnr: list[dict[str, Any]] = field(default_factory=list)
    layer_sqnr_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        from slimkit.io import jsonable

        return jsonable({"kind": "behaviour_diff", **vars(self)})  # type: ignore[no-any-return]


def behaviour_diff(original: Model, compressed: Model, data: Dataset, *, max_flipped: int = 20,
                   k: int = 5, layers: bool = True) -> BehaviourDiff:
    """Compare ``compressed`` with ``original`` on ``data``.

    Args:
        original, compressed: torch or ONNX models with the same inputs and output shape.
        data: examples (labels give per-class accuracy).
        max_flipped: how many flipped examples to list (the most confident originals first).
        k: neighbours per example for encoders.
        layers: compute the per-layer output SQNR.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> from slimkit.data import synthetic
        >>> m = tiny_model("cnn")
        >>> d = behaviour_diff(m, m, synthetic(m.inputs, 8, seed=0))
        >>> d.top1_agreement, d.flipped_total, d.layer_sqnr[0]["sqnr_db"]
        (1.0, 0, 'inf')
    """
    ref, cand = (predict(m, data, _runtime(m)) for m in (original, compressed))
    if ref.shape != cand.shape:
        raise DataError(f"'{original.name}' gives outputs of shape {ref.shape}, "
                        f"'{compressed.name}' {cand.shape}: they cannot be compared")
    result = BehaviourDiff(original.name, compressed.name, len(data), output_fidelity(ref, cand))
    if original.task == Task.EMBEDDING or ref.ndim != 2 or ref.shape[1] < 2:
        result.embedding = embedding_fidelity(ref, cand, k)
        result.neighbours = changed_neighbours(ref, cand, k)
    else:
        _classification(result, ref, cand, data.labels, max_flipped)
    if layers:
        result.layer_sqnr, result.layer_sqnr_note = layer_sqnr(original, compressed,
                                                               data.take(LAYER_EXAMPLES))
    return result


def _runtime(model: Model) -> str:
    return "torch" if model.module is not None else "onnxruntime"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits.

    Example:
        >>> softmax(np.array([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def _classification(result: BehaviourDiff, ref: np.ndarray, cand: np.ndarray,
                    labels: np.ndarray | None, max_flipped: int) -> None:
    p_ref, p_cand = softmax(ref), softmax(cand)
    pred_ref, pred_cand = p_ref.argmax(1), p_cand.argmax(1)
    result.top1_agreement = float(np.mean(pred_ref == pred_cand))
    if labels is not None:
        result.accuracy = {"original": float(np.mean(pred_ref == labels)),
                           "compressed": float(np.mean(pred_cand == labels))}
        result.per_class = per_class_deltas(pred_ref, pred_cand, labels)
    flips = np.flatnonzero(pred_ref != pred_cand)
    result.flipped_total = int(len(flips))
    order = flips[np.argsort(-p_ref[flips, pred_ref[flips]], kind="stable")][:max_flipped]
    result.flipped = [{
        "index": int(i), **({"label": int(labels[i])} if labels is not None else {}),
        "original": int(pred_ref[i]), "original_confidence": float(p_ref[i, pred_ref[i]]),
        "compressed": int(pred_cand[i]), "compressed_confidence": float(p_cand[i, pred_cand[i]]),
    } for i in order]


def per_class_deltas(pred_ref: np.ndarray, pred_cand: np.ndarray,
                     labels: np.ndarray) -> list[dict[str, Any]]:
    """Accuracy per true class under both models, and the change.

    Example:
        >>> per_class_deltas(np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([0, 1, 1]))[1]
        {'class': 1, 'examples': 2, 'original': 1.0, 'compressed': 0.5, 'delta': -0.5}
    """
    rows = []
    for c in np.unique(labels):
        mask = labels == c
        a, b = float(np.mean(pred_ref[mask] == c)), float(np.mean(pred_cand[mask] == c))
        rows.append({"class": int(c), "examples": int(mask.sum()), "original": a,
                     "compressed": b, "delta": b - a})
    return rows


def changed_neighbours(ref: np.ndarray, cand: np.ndarray, k: int = 5,
                       limit: int = 20) -> list[dict[str, Any]]:
    """Examples whose top-k cosine neighbours differ, most changed first."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), -1).astype(np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    k = min(k, len(ref) - 1)
    if k < 1:
        return []
    rows: list[dict[str, Any]] = []
    for i, (s_ref, s_cand) in enumerate(zip(unit(ref) @ unit(ref).T, unit(cand) @ unit(cand).T,
                                            strict=True)):
        s_ref[i] = s_cand[i] = -np.inf
        top_ref = [int(j) for j in np.argsort(-s_ref, kind="stable")[:k]]
        top_cand = [int(j) for j in np.argsort(-s_cand, kind="stable")[:k]]
        lost = [j for j in top_ref if j not in top_cand]
        if lost:
            rows.append({"index": i, "neighbours_before": top_ref, "neighbours_after": top_cand,
                         "changed": len(lost)})
    rows.sort(key=lambda r: -r["changed"])
    return rows[:limit]


def layer_sqnr(original: Model, compressed: Model,
               data: Dataset) -> tuple[list[dict[str, Any]], str]:
    """Output SQNR of every layer the two models share, in network order, or a note saying why
    it is not available."""
    if original.module is not None and compressed.module is not None:
        if _same_structure(original.module, compressed.module):
            return _torch_layers(original, compressed, data), ""
        return [], ("the two torch models differ in structure (layers renamed, removed or "
                    "resized): no layer-by-layer comparison")
    with tempfile.TemporaryDirectory(prefix="slimkit-diff-") as tmp:
        paths = [_onnx_path(m, Path(tmp) / f"{i}.onnx") for i, m in
                 enumerate((original, compressed))]
        rows = _onnx_layers(paths[0], paths[1], data)
    if not rows:
        return [], "no intermediate tensor names match between the two ONNX graphs"
    return rows, ""


def _same_structure(a: Any, b: Any) -> bool:
    mods_a, mods_b = dict(a.named_modules()), dict(b.named_modules())
    if mods_a.keys() != mods_b.keys():
        return False
    return all(type(mods_a[n]) is type(mods_b[n]) and
               [tuple(p.shape) for p in mods_a[n].parameters(recurse=False)] ==
               [tuple(p.shape) for p in mods_b[n].parameters(recurse=False)] for n in mods_a)


def _torch_layers(original: Model, compressed: Model, data: Dataset) -> list[dict[str, Any]]:
    import torch

    outputs: list[dict[str, np.ndarray]] = []
    order: list[str] = []
    for model in (original, compressed):
        module = model.require_module("per-layer comparison")
        captured: dict[str, np.ndarray] = {}
        handles = [sub.register_forward_hook(_capture(name, captured, order))
                   for name, sub in module.named_modules()
                   if name and not any(True for _ in sub.children())]
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                module(*model.torch_args(data.first_batch(len(data))))
        finally:
            module.train(was_training)
            for handle in handles:
                handle.remove()
        outputs.append(captured)
    names = list(dict.fromkeys(order))
    return [_row(n, outputs[0][n], outputs[1][n]) for n in names
            if n in outputs[0] and n in outputs[1] and outputs[0][n].shape == outputs[1][n].shape]


def _capture(name: str, store: dict[str, np.ndarray], order: list[str]) -> Any:
    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        import torch

        if isinstance(output, torch.Tensor) and output.is_floating_point():
            store[name] = output.detach().float().numpy().copy()
            order.append(name)

    return hook


def _row(name: str, ref: np.ndarray, cand: np.ndarray) -> dict[str, Any]:
    value = sqnr_db(ref, cand)
    return {"layer": name, "sqnr_db": value if np.isfinite(value) else "inf",
            "shape": list(ref.shape[1:])}


def _onnx_path(model: Model, target: Path) -> Path:
    if model.onnx_path is not None:
        return model.onnx_path
    from slimkit.export.onnx import export_onnx

    return export_onnx(model, target).path


def _onnx_layers(path_a: Path, path_b: Path, data: Dataset) -> list[dict[str, Any]]:
    """Float intermediate tensors with the same name in both graphs, run once each."""
    import onnx

    protos = [onnx.load(str(p)) for p in (path_a, path_b)]
    floats = _float_tensors(protos[0]), set(_float_tensors(protos[1]))
    # a quantized graph's consumers see the dequantized copy of a tensor (QDQ format), and the
    # quantizer may drop the Relu before it, leaving the pre-activation under the same name
    pairs = {n: (n + DQ_SUFFIX if n + DQ_SUFFIX in floats[1] else n) for n in floats[0]
             if n in floats[1] or n + DQ_SUFFIX in floats[1]}
    if not pairs:
        return []
    ref = _run_with_outputs(protos[0], list(pairs), data)
    cand = _run_with_outputs(protos[1], list(pairs.values()), data)
    return [_row(n, ref[n], cand[m]) for n, m in pairs.items() if ref[n].shape == cand[m].shape]


def _float_tensors(proto: Any) -> list[str]:
    """Names of float node outputs, in node order (shape inference gives their types)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in
             [*inferred.graph.value_info, *inferred.graph.output]}
    return [out for node in proto.graph.node for out in node.output
            if out and types.get(out) == onnx.TensorProto.FLOAT]


def _run_with_outputs(proto: Any, names: list[str], data: Dataset) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    from slimkit.runtime.base import RuntimeOptions
    from slimkit.runtime.onnxrt import session_options

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, None))
    opts = session_options(RuntimeOptions(threads=1))
    # fusions would remove the very tensors compared here
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    feed_names = {i.name for i in session.get_inputs()}
    batch = {k: v for k, v in data.first_batch(len(data)).items() if k in feed_names}
    values = session.run(names, batch)
    return dict(zip(names, values, strict=True))
