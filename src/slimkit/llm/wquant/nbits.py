"""Write quantized weights into an exported generation graph: each ``MatMul`` whose weight is an
initializer becomes ``MatMulNBits``, the token embedding's ``Gather`` becomes
``GatherBlockQuantized`` (both ONNX Runtime contrib operators that ONNX Runtime GenAI runs).

The graph's fp32 MatMul weights are matched to the torch linears they came from by value (the
builder stacks q, k and v into one QKV MatMul; the match finds the stacking and checks every
row), so no naming convention of the builder is assumed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from slimkit.errors import ExportError
from slimkit.llm.wquant.grid import QuantizedWeight, concat, pack

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Linear:
    """A torch linear (or the token embedding) to place: its fp32 weight ``(N, K)`` as exported
    and its quantized form (None: stays fp32)."""

    name: str
    weight: torch.Tensor
    quantized: QuantizedWeight | None


def _key(row: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(row, np.float32).tobytes()).hexdigest()


def match_columns(weight: np.ndarray, by_first_row: dict[str, Linear]) -> list[Linear]:
    """The linears whose stacked rows are ``weight`` ``(K, N)``'s columns, in order; every
    value checked."""
    parts, column = [], 0
    while column < weight.shape[1]:
        linear = by_first_row.get(_key(weight[:, column]))
        if linear is None:
            return []
        rows = linear.weight.shape[0]
        block = weight[:, column:column + rows].T
        if block.shape != tuple(linear.weight.shape) or not np.array_equal(
                block, linear.weight.numpy()):
            return []
        parts.append(linear)
        column += rows
    return parts


def matmul_nbits(node: Any, quantized: QuantizedWeight, prefix: str, level: int) -> tuple[
        Any, list[Any]]:
    """The MatMulNBits node replacing ``node`` and its initializers."""
    from onnx import helper, numpy_helper

    b, scales, zeros = pack(quantized)
    inits = [numpy_helper.from_array(b, f"{prefix}.q{quantized.bits}"),
             numpy_helper.from_array(scales, f"{prefix}.scales")]
    inputs = [node.input[0], inits[0].name, inits[1].name]
    if zeros is not None:
        inits.append(numpy_helper.from_array(zeros, f"{prefix}.zero_points"))
        inputs.append(inits[-1].name)
    new = helper.make_node("MatMulNBits", inputs, list(node.output), name=node.name,
                           domain=MS_DOMAIN, K=quantized.k, N=quantized.n, bits=quantized.bits,
                           block_size=quantized.block, accuracy_level=level)
    return new, inits


def gather_quantized(node: Any, quantized: QuantizedWeight, prefix: str,
                     shared: tuple[str, ...] | None = None) -> tuple[list[Any], list[Any]]:
    """``GatherBlockQuantized`` replacing the embedding ``Gather`` (rows = tokens, blocks along
    the hidden size); ``shared`` names the head's MatMulNBits tensors to read instead of new
    ones (reshaped to rows, as ONNX Runtime GenAI's builder does for tied embeddings)."""
    from onnx import helper, numpy_helper

    if quantized.k % quantized.block:
        raise ExportError(f"the embedding's hidden size {quantized.k} is not a multiple of its "
                          f"block size {quantized.block}; choose a block that divides it")
    nodes, inits = [], []
    if shared is None:
        b, scales, zeros = pack(quantized)
        inits = [numpy_helper.from_array(b.reshape(b.shape[0], -1), f"{prefix}.q"),
                 numpy_helper.from_array(scales.reshape(quantized.n, -1), f"{prefix}.scales")]
        names = [i.name for i in inits]
        if zeros is not None:
            inits.append(numpy_helper.from_array(zeros.reshape(quantized.n, -1),
                                                 f"{prefix}.zero_points"))
            names.append(inits[-1].name)
    else:
        names = []
        for i, name in enumerate(shared):
            width = -1
            shape = numpy_helper.from_array(np.array([quantized.n, width], np.int64),
                                            f"{prefix}.shape{i}")
            inits.append(shape)
            nodes.append(helper.make_node("Reshape", [name, shape.name], [f"{prefix}.rows{i}"],
                                          name=f"{prefix}/Reshape{i}"))
            names.append(f"{prefix}.rows{i}")
    inputs = [names[0], node.input[1], *names[1:]]
    nodes.append(helper.make_node("GatherBlockQuantized", inputs, list(node.output),
                                  name=node.name, domain=MS_DOMAIN, gather_axis=0,
                                  quantize_axis=1, block_size=quantized.block,
                                  bits=quantized.bits))
    return nodes, inits


def rewrite(model: Any, linears: list[Linear], embedding: Linear | None, level: int,
            share_embedding: bool) -> dict[str, Any]:
    """Replace, in ``model`` (an ONNX ModelProto with its weights loaded), each MatMul matched to
    quantized linears and the embedding Gather; returns what was done per MatMul."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    by_row = {_key(lin.weight[0].numpy()): lin for lin in linears}
    done: dict[str, Any] = {}
    head_tensors: tuple[str, ...] | None = None
    new_nodes, dropped = [], set()
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            parts = match_columns(numpy_helper.to_array(inits[node.input[1]]), by_row)
            if parts and all(p.quantized is not None for p in parts):
                q = concat([p.quantized for p in parts if p.quantized is not None])
                new, extra = matmul_nbits(node, q, node.input[1].removesuffix(".weight"), level)
                new_nodes.append(new)
                graph.initializer.extend(extra)
                dropped.add(node.input[1])
                done[node.name] = [p.name for p in parts]
                if embedding is not None and [p.name for p in parts] == ["lm_head"]:
                    head_tensors = tuple(new.input[1:])
                continue
        new_nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    if embedding is not None and embedding.quantized is not None:
        _replace_embedding(graph, inits, embedding.weight, embedding.quantized,
                           head_tensors if share_embedding else None, dropped)
    kept = [i for i in graph.initializer if i.name not in dropped]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    return done


def _replace_embedding(graph: Any, inits: dict[str, Any], weight: torch.Tensor,
                       quantized: QuantizedWeight, shared: tuple[str, ...] | None,
                       dropped: set[str]) -> None:
    from onnx import numpy_helper

    target = weight.numpy()
    for position, node in enumerate(graph.node):
        if node.op_type == "Gather" and node.input[0] in inits:
            table = numpy_helper.to_array(inits[node.input[0]])
            if table.shape == target.shape and np.array_equal(table, target):
                nodes, extra = gather_quantized(node, quantized, "model.embed_tokens", shared)
                del graph.node[position]
                for offset, new in enumerate(nodes):
                    graph.node.insert(position + offset, new)
                graph.initializer.extend(extra)
                dropped.add(node.input[0])
                return
    raise ExportError("cannot find the token embedding's Gather in the exported graph")
