"""What static quantization must leave in float in the models users bring, found from the graph:

- nodes that compute *indices* in float (T5's and MPNet's relative position buckets: a
  ``log`` of positions, scaled and cast to int64). Their values are not activations: a
  quantized ``log(0) = -inf`` becomes a garbage bucket and a ``Gather`` out of range;
- a layer ONNX Runtime's quantizer refuses (a bias whose input scale is invalid, e.g. a
  saturated ``tanh``): it is named and kept in float, and the rest is quantized.

Any other failure of ONNX Runtime's quantizer becomes one line naming the node it mentions
(:func:`run_quantizer`), never the quantizer's traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

NODE_MESSAGE = re.compile(r"(?:node|Name:)\s*'([^']+)'")
INT_TYPES = {2, 3, 4, 5, 6, 7, 12, 13}  # onnx.TensorProto integer element types
STOP = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Gather", "Shape", "Constant")
BIAS_MESSAGE = re.compile(r"quantizing bias '([^']+)'")
MAX_RETRIES = 8


def index_nodes(path: Path) -> list[str]:
    """Float nodes whose results end in a cast to an integer type (index arithmetic)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    found: dict[str, None] = {}
    work = [node for node in graph.node if node.op_type == "Cast"
            and any(a.name == "to" and a.i in INT_TYPES for a in node.attribute)]
    while work:
        node = work.pop()
        for name in node.input:
            source = producer.get(name)
            if source is None or source.op_type in STOP or source.name in found:
                continue
            found[source.name] = None
            work.append(source)
    return [name for name in found if name]


def quantize_with_fallback(run: Callable[[list[str]], Any], excluded: list[str],
                           float_path: Path) -> list[str]:
    """Call ``run(excluded)``; when ONNX Runtime refuses a bias, exclude the node using it and
    try again. Returns the nodes it had to keep in float."""
    import onnx

    kept: list[str] = []
    for _ in range(MAX_RETRIES):
        try:
            run(excluded + kept)
            return kept
        except ValueError as exc:
            match = BIAS_MESSAGE.search(str(exc))
            if match is None:
                raise
            graph = onnx.load(str(float_path), load_external_data=False).graph
            users = [n.name for n in graph.node if match.group(1) in n.input and n.name]
            if not users or set(users) <= set(kept):
                raise
            kept.extend(u for u in users if u not in kept)
    run(excluded + kept)
    return kept


def run_quantizer(run: Callable[[], Any], model: str, mode: str) -> Any:
    """``run()``; a failure inside ONNX Runtime's quantizer is one clear line."""
    from slimkit.errors import ExportError, SlimkitError

    try:
        return run()
    except SlimkitError:
        raise
    except Exception as exc:  # the quantizer raises many types: name the node if it can
        match = NODE_MESSAGE.search(str(exc))
        where = f" at node '{match.group(1)}'" if match else ""
        hint = (f"; keep it in float with --exclude name:{match.group(1)}" if match
                else "; try another --mode or exclude layers with --exclude")
        raise ExportError(f"ONNX Runtime's {mode} quantizer failed on '{model}'{where} "
                          f"({type(exc).__name__}){hint}") from exc
