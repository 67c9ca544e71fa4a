"""Exact rewrites of a fused transformer-encoder ONNX graph that make its int8 model faster and
more faithful in ONNX Runtime. Each keeps the float function (checked by the caller):

* ``unfuse_skip_layernorm``: ``SkipLayerNormalization`` -> ``Sum`` + ``LayerNormalization``.
  ONNX Runtime 1.32's CPU SkipLayerNormalization kernel took 249 us on 128x384 where Add + Add +
  LayerNormalization took 50 us (Zen 4, 1 thread; ``benchmarks/bench_quantize_int8.py``), and
  its session optimiser fuses ``Add -> LayerNormalization`` back into it; a ``Sum`` node is not
  matched by that fusion, so the fast kernels stay.
* ``smooth_layernorms``: SmoothQuant (Xiao et al. 2023) folded into each LayerNormalization
  whose output feeds weight layers: gamma and beta divided by ``s``, the weight rows multiplied
  by ``s``. In post-LN blocks (BERT) the LayerNorm output also feeds the residual connection;
  that consumer gets ``Mul(y, s)``, so the function stays exact in pre-LN and post-LN blocks.
* ``split_outlier_channels``: an FFN's hidden channels permuted (first weight's columns and
  bias, second weight's rows: exact) so the ``k`` channels with the largest activations come
  last, and the second MatMul split in two over them. Dynamic int8 then gives the outlier
  channels their own activation range instead of stretching one range over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# element-wise ops an FFN's hidden channels pass through (a per-channel permutation commutes
# with them when their constants are scalars or per-channel vectors, permuted too)
ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Erf", "Tanh", "Sigmoid", "Relu", "Gelu",
               "BiasGelu", "FastGelu", "QuickGelu", "Pow", "Sqrt", "Neg", "Identity")
SMOOTH_CLAMP = (1e-2, 1e2)


@dataclass(frozen=True)
class WeightUse:
    """A node reading an activation ``x`` with a constant weight whose rows are x's channels."""

    node: Any
    weight: str


def _inits(proto: Any) -> dict[str, Any]:
    return {init.name: init for init in proto.graph.initializer}


def _consumers(proto: Any, tensor: str) -> list[Any]:
    return [node for node in proto.graph.node if tensor in node.input]


def _array(proto: Any, name: str) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(_inits(proto)[name]).copy()


def _set(proto: Any, name: str, value: np.ndarray) -> str:
    """Store ``value`` under a fresh initializer name (the old one may be shared); return it."""
    from onnx import numpy_helper

    names = set(_inits(proto))
    new, i = f"{name}_sk", 0
    while new in names:
        i += 1
        new = f"{name}_sk{i}"
    proto.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), new))
    return new


def unfuse_skip_layernorm(proto: Any) -> int:
    """Replace every SkipLayerNormalization in place, and turn each Add that feeds a
    LayerNormalization into a Sum (so ORT's session cannot fuse it); return how many."""
    from onnx import helper

    nodes, count = [], 0
    norm_inputs = {n.input[0] for n in proto.graph.node if n.op_type == "LayerNormalization"}
    for node in proto.graph.node:
        if node.op_type == "Add" and node.output[0] in norm_inputs:
            node.op_type = "Sum"
            count += 1
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        ins = list(node.input) + [""] * (5 - len(node.input))
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        total = node.output[3] if len(node.output) > 3 and node.output[3] else \
            f"{node.name or node.output[0]}_sum"
        nodes.append(helper.make_node("Sum", [t for t in (ins[0], ins[1], ins[4]) if t],
                                      [total], name=f"{node.name}_Sum"))
        nodes.append(helper.make_node("LayerNormalization", [t for t in (total, ins[2], ins[3])
                                                             if t], [node.output[0]],
                                      name=f"{node.name}_LayerNorm", axis=-1, epsilon=eps))
        count += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return count


def weight_uses(proto: Any, tensor: str) -> list[WeightUse]:
    """MatMul/Attention nodes that read ``tensor`` as input 0 with a constant 2-D weight."""
    inits = _inits(proto)
    uses = []
    for node in _consumers(proto, tensor):
        if node.op_type in ("MatMul", "Attention") and node.input[0] == tensor and \
                len(node.input) > 1 and node.input[1] in inits and \
                len(inits[node.input[1]].dims) == 2:
            uses.append(WeightUse(node, node.input[1]))
    return uses


def layernorm_outputs(proto: Any) -> list[str]:
    """Outputs of LayerNormalization nodes with a constant gamma that feed weight layers."""
    inits = _inits(proto)
    return [node.output[0] for node in proto.graph.node
            if node.op_type == "LayerNormalization" and len(node.input) > 1
            and node.input[1] in inits and weight_uses(proto, node.output[0])]


def smooth_scale(act_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``, clamped to a safe range.

    Example:
        >>> smooth_scale(np.array([16.0, 1.0]), np.array([1.0, 1.0]), 0.5).tolist()
        [4.0, 1.0]
    """
    scale = np.maximum(act_max, 1e-5) ** alpha / np.maximum(weight_max, 1e-5) ** (1 - alpha)
    return np.clip(scale, *SMOOTH_CLAMP).astype(np.float32)


def smooth_layernorms(proto: Any, act_max: dict[str, np.ndarray], alpha: float) -> list[str]:
    """Fold SmoothQuant scales into every LayerNorm of ``act_max`` in place (see the module
    docstring); return the LayerNorm outputs smoothed."""
    from onnx import helper

    producers = {node.output[0]: node for node in proto.graph.node}
    done = []
    for tensor, amax in act_max.items():
        norm, uses = producers.get(tensor), weight_uses(proto, tensor)
        if norm is None or norm.op_type != "LayerNormalization" or not uses:
            continue
        w_max = np.max([np.abs(_array(proto, u.weight)).max(axis=1) for u in uses], axis=0)
        scale = smooth_scale(amax, w_max, alpha)
        norm.input[1] = _set(proto, norm.input[1], _array(proto, norm.input[1]) / scale)
        if len(norm.input) > 2 and norm.input[2]:
            norm.input[2] = _set(proto, norm.input[2], _array(proto, norm.input[2]) / scale)
        for use in uses:
            use.node.input[1] = _set(proto, use.weight, _array(proto, use.weight) * scale[:, None])
        others = [n for n in _consumers(proto, tensor) if all(n is not u.node for u in uses)]
        outputs = [o for o in proto.graph.output if o.name == tensor]
        if others or outputs:
            restored = f"{tensor}_unsmoothed"
            for node in others:
                node.input[:] = [restored if t == tensor else t for t in node.input]
            mul = helper.make_node("Mul", [tensor, _set(proto, f"{tensor}_scale", scale)],
                                   [restored], name=f"{norm.name}_unsmooth")
            proto.graph.node.insert(list(proto.graph.node).index(norm) + 1, mul)
            for out in outputs:
                out.name = restored
        done.append(tensor)
    return done


@dataclass(frozen=True)
class Ffn:
    """``MatMul(x, W1) -> element-wise chain -> MatMul(h, W2)``: h's channels are W1's columns.
    ``vectors`` are the chain's per-channel constants (biases: permuted with the channels)."""

    first: Any
    vectors: tuple[tuple[Any, int], ...]  # (node, input index) of 1-D per-channel constants
    hidden: str  # the second MatMul's input
    second: Any


def find_ffns(proto: Any) -> list[Ffn]:
    """Every MatMul pair joined by an element-wise chain (bias Add, GELU as one op or as its
    Erf decomposition, ReLU...) whose constants are scalars or per-channel vectors, and whose
    intermediate tensors feed nothing else: permuting the hidden channels is then exact."""
    inits = _inits(proto)
    producers = {out: node for node in proto.graph.node for out in node.output}
    found = []
    for second in proto.graph.node:
        if second.op_type != "MatMul" or second.input[1] not in inits or \
                len(inits[second.input[1]].dims) != 2:
            continue
        chain = _chain(proto, second.input[0], int(inits[second.input[1]].dims[0]), inits,
                       producers)
        if chain is not None:
            found.append(Ffn(chain[0], chain[1], second.input[0], second))
    return found


def _chain(proto: Any, hidden: str, width: int, inits: dict[str, Any],
           producers: dict[str, Any]) -> tuple[Any, tuple[tuple[Any, int], ...]] | None:
    """(first MatMul, per-channel constants) of the element-wise chain ending at ``hidden``."""
    stack, nodes, vectors, first, seen = [hidden], [], [], None, set()
    while stack:
        tensor = stack.pop()
        if tensor in seen:  # GELU's input feeds two of its nodes
            continue
        seen.add(tensor)
        node = producers.get(tensor)
        if node is None:
            return None
        if node.op_type == "MatMul" and node.input[1] in inits and \
                tuple(inits[node.input[1]].dims)[-1:] == (width,):
            if first is not None and first is not node:
                return None
            first = node
            continue
        if node.op_type not in ELEMENTWISE:
            return None
        nodes.append(node)
        for index, tensor in enumerate(node.input):
            scalar = producers.get(tensor)
            if scalar is not None and scalar.op_type == "Constant":
                if _constant_size(scalar) != 1:
                    return None
            elif tensor in inits:
                dims = tuple(inits[tensor].dims)
                if dims == (width,):
                    vectors.append((node, index))
                elif int(np.prod(dims)) != 1:
                    return None
            elif tensor:
                stack.append(tensor)
    inside = {id(n) for n in nodes}
    for node in nodes:  # no intermediate may leak to a consumer outside the chain
        for out in node.output:
            if out != hidden and any(id(c) not in inside for c in _consumers(proto, out)):
                return None
    if first is None or not nodes or len(_consumers(proto, first.output[0])) != 1:
        return None
    return first, tuple(vectors)


def split_outlier_channels(proto: Any, act_max: dict[str, np.ndarray], k: int) -> list[str]:
    """Permute and split each FFN of :func:`find_ffns` whose hidden activation has stats;
    return the hidden tensors split."""
    from onnx import helper

    done = []
    for ffn in find_ffns(proto):
        hidden = ffn.hidden
        if hidden not in act_max or k >= len(act_max[hidden]):
            continue
        order = np.argsort(act_max[hidden], kind="stable")
        perm = np.concatenate([np.sort(order[:-k]), np.sort(order[-k:])])
        ffn.first.input[1] = _set(proto, ffn.first.input[1], _array(proto, ffn.first.input[1])
                                  [:, perm])
        for node, index in ffn.vectors:
            node.input[index] = _set(proto, node.input[index], _array(proto, node.input[index])
                                     [perm])
        w2 = _array(proto, ffn.second.input[1])[perm]
        sizes = _set_int(proto, f"{hidden}_split", np.array([len(perm) - k, k], np.int64))
        main, out = f"{hidden}_main", f"{hidden}_outliers"
        name = ffn.second.name or hidden
        split = helper.make_node("Split", [hidden, sizes], [main, out], axis=-1,
                                 name=f"{name}_split")
        mm_main = helper.make_node("MatMul", [main, _set(proto, f"{ffn.second.input[1]}_main",
                                                         w2[:-k])],
                                   [f"{name}_main_out"], name=f"{name}_main")
        mm_out = helper.make_node("MatMul", [out, _set(proto, f"{ffn.second.input[1]}_outl",
                                                       w2[-k:])],
                                  [f"{name}_outlier_out"], name=f"{name}_outliers")
        add = helper.make_node("Add", [mm_main.output[0], mm_out.output[0]],
                               [ffn.second.output[0]], name=f"{name}_join")
        at = list(proto.graph.node).index(ffn.second)
        proto.graph.node.remove(ffn.second)
        for offset, node in enumerate((split, mm_main, mm_out, add)):
            proto.graph.node.insert(at + offset, node)
        done.append(hidden)
    return done


def _constant_size(node: Any) -> int:
    from onnx import helper

    value = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "value"),
                 None)
    return int(np.prod(value.dims)) if value is not None else -1


def _set_int(proto: Any, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    proto.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def drop_unused_initializers(proto: Any) -> int:
    used = {t for node in proto.graph.node for t in node.input}
    used |= {o.name for o in proto.graph.output}
    keep = [init for init in proto.graph.initializer if init.name in used]
    dropped = len(proto.graph.initializer) - len(keep)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    return dropped


def rewrite_encoder(src: Any, dst: Any, data: Any, input_names: tuple[str, ...],
                    alpha: float | None, outlier_channels: int) -> dict[str, Any]:
    """Write ``src`` (a fused encoder graph) rewritten to ``dst``: SkipLayerNorm unfused, then,
    with calibration statistics of ``data``, SmoothQuant folded (``alpha``) and FFN outlier
    channels split (``outlier_channels``). Returns what was done."""
    import onnx

    from slimkit.quantize.act_stats import channel_absmax

    proto = onnx.load(str(src))
    info: dict[str, Any] = {"skip_layernorm_unfused": unfuse_skip_layernorm(proto)}
    tensors = layernorm_outputs(proto) if alpha is not None else []
    if outlier_channels:
        tensors += [ffn.hidden for ffn in find_ffns(proto)]
    if tensors:
        onnx.save(proto, str(dst))
        stats = channel_absmax(dst, tensors, data, input_names)
        if alpha is not None:
            smoothed = smooth_layernorms(proto, stats, alpha)
            info["smooth_quant"] = {"alpha": alpha, "layernorms": len(smoothed),
                                    "residual_muls": sum(n.op_type == "Mul" and
                                                         n.name.endswith("_unsmooth")
                                                         for n in proto.graph.node)}
        if outlier_channels:
            split = split_outlier_channels(proto, stats, outlier_channels)
            info["outlier_split"] = {"channels": outlier_channels, "ffns": len(split)}
        info["calibration_examples"] = len(data)
    drop_unused_initializers(proto)
    onnx.save(proto, str(dst))
    return info
