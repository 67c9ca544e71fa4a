"""Graph edits slimkit makes to the builder's decoder graph (in place, graph proto only: the
external weight file is neither read nor rewritten).

``logits_to_keep``: the builder's graph computes the LM head for every position, which prefill
does not need (generation reads the last position only). The LM head is about a fifth of the
per-token FLOPs of SmolLM2 (576 x 49152 of ~135M weights), so slimkit slices the final hidden
states to the last ``logits_to_keep`` positions before the head. ``logits_to_keep`` is a graph
input backed by an initializer of 1: ONNX Runtime GenAI does not feed it, so it gets last-token
logits ``(batch, 1, vocab)`` (the shape, declared static, that the builder's own
``prune_lm_head`` gives and GenAI allocates); slimkit's evaluation feeds the sequence length and
gets every position's logits from the very same graph (ONNX Runtime only logs that the shape
differs from the declared one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimkit._deps import require
from slimkit.errors import ExportError

LOGITS_TO_KEEP = "logits_to_keep"
INT64_MAX = 2**63 - 1


def add_logits_to_keep(path: Path, logits: str = "logits") -> None:
    """Insert ``Slice(hidden, -logits_to_keep:, axis=1)`` before the MatMul that makes
    ``logits`` (directly or through a Cast/Add of the head's output)."""
    onnx = require("onnx", "editing an exported graph")
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    if any(i.name == LOGITS_TO_KEEP for i in graph.input):
        return
    head = _head_matmul(graph, logits)
    hidden = head.input[0]
    names = {"neg": f"{LOGITS_TO_KEEP}/neg", "end": f"{LOGITS_TO_KEEP}/end",
             "axis": f"{LOGITS_TO_KEEP}/axis", "out": f"{LOGITS_TO_KEEP}/hidden"}
    import numpy as np

    graph.initializer.extend([
        numpy_helper.from_array(np.array([1], np.int64), LOGITS_TO_KEEP),
        numpy_helper.from_array(np.array([INT64_MAX], np.int64), names["end"]),
        numpy_helper.from_array(np.array([1], np.int64), names["axis"])])
    graph.input.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1]))
    nodes = [helper.make_node("Neg", [LOGITS_TO_KEEP], [names["neg"]], name=names["neg"]),
             helper.make_node("Slice", [hidden, names["neg"], names["end"], names["axis"]],
                              [names["out"]], name=f"{LOGITS_TO_KEEP}/slice")]
    head.input[0] = names["out"]
    position = list(graph.node).index(head)
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    for output in graph.output:  # GenAI sizes its logits buffer from this static 1
        if output.name == logits:
            output.type.tensor_type.shape.dim[1].dim_value = 1
    onnx.save(model, str(path))


def _head_matmul(graph: Any, logits: str) -> Any:
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(logits)
    for _ in range(4):  # the head's MatMul, possibly behind a Cast or a bias Add
        if node is None or node.op_type in ("MatMul", "MatMulNBits", "Gemm"):
            break
        node = producers.get(node.input[0])
    if node is None or node.op_type not in ("MatMul", "MatMulNBits", "Gemm"):
        raise ExportError(f"cannot find the LM head that computes '{logits}' in the exported "
                          "graph; export without the last-token head")
    return node
