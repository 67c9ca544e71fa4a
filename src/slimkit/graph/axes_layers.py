"""Axis-graph rules of the ops with weights (linear, matmul, convolution, norms, embedding,
weight normalisation); attention, recurrent layers and pooling are in ``axes_attention.py``.
A weight's axis that creates channels (a Linear's rows, an embedding's columns) is a
*producer*: its positions are the units ranked and pruned. See ``axes.py``."""

from __future__ import annotations

from typing import Any

from slimkit.graph.axes import Axis, Layout, axis_size, fixed
from slimkit.graph.axes_rules import OpContext, Value, register


def produce(ctx: OpContext, node: Any, axis: Axis) -> None:
    """Record ``axis`` of a weight as a producer of channels (labelled by the module)."""
    if ctx.is_param(node):
        label = ctx.module or str(getattr(node, "name", "weight"))
        ctx.graph.producers.append((label, ctx.graph.flat(axis)))


def _bias(ctx: OpContext, bias: Any, axis: Axis, what: str) -> None:
    layout = ctx.layout(bias)
    if layout is not None and len(layout) == 1:
        ctx.unify(layout[0], axis, what)


@register("linear")
def linear(ctx: OpContext) -> Value:
    x, w = ctx.layout(ctx.arg(0, "input")), ctx.layout(ctx.arg(1, "weight"))
    if x is None or w is None or len(w) != 2:
        return ctx.unknown("a linear layer without a 2-D weight")
    ctx.unify(x[-1], w[1], "a linear layer's input")
    _bias(ctx, ctx.arg(2, "bias"), w[0], "a linear layer's bias")
    produce(ctx, ctx.arg(1, "weight"), w[0])
    return (*x[:-1], w[0])


@register("matmul", "mm", "bmm")
def matmul(ctx: OpContext) -> Value:
    return _matmul(ctx, ctx.arg(0, "self"), ctx.arg(1, "other"))


@register("addmm")
def addmm(ctx: OpContext) -> Value:
    out = _matmul(ctx, ctx.arg(1, "mat1"), ctx.arg(2, "mat2"))
    if isinstance(out, tuple):
        broadcast_into(ctx, ctx.arg(0, "self"), out)
    return out


@register("baddbmm", "addbmm")
def baddbmm(ctx: OpContext) -> Value:
    out = _matmul(ctx, ctx.arg(1, "batch1"), ctx.arg(2, "batch2"))
    if isinstance(out, tuple):
        broadcast_into(ctx, ctx.arg(0, "self"), out)
    return out


def broadcast_into(ctx: OpContext, node: Any, out: Layout) -> None:
    """Couple ``node`` (broadcast from the right) with ``out``."""
    layout, shape = ctx.layout(node), ctx.shape(node)
    if layout is None or shape is None:
        return
    for j, axis in enumerate(layout):
        i = j + len(out) - len(layout)
        if i >= 0 and axis_size(axis) == axis_size(out[i]):
            ctx.unify(axis, out[i], "an added term")
        elif any(f.tracked for f in axis):
            ctx.graph.pin(axis, ctx.reason("broadcast"))


def _matmul(ctx: OpContext, a: Any, b: Any) -> Value:
    la, lb, shape = ctx.layout(a), ctx.layout(b), ctx.shape()
    if la is None or lb is None or shape is None or len(la) < 2 or len(lb) < 2:
        return ctx.unknown("a matrix product of vectors")
    ctx.unify(la[-1], lb[-2], "a matrix product")
    batch_rank = len(shape) - 2
    batch: list[Axis] = []
    for i in range(batch_rank):
        found = [x[len(x) - 2 - batch_rank + i] for x in (la, lb)
                 if len(x) - 2 - batch_rank + i >= 0
                 and axis_size(x[len(x) - 2 - batch_rank + i]) == shape[i]]
        for other in found[1:]:
            ctx.unify(found[0], other, "the batch axes of a matrix product")
        batch.append(found[0] if found else fixed(shape[i]))
    if not ctx.is_param(a) and not ctx.is_param(b):  # attention: q @ k^T, weights @ v
        reason = ctx.reason("multiplied between two activations (a head's size)")
        ctx.graph.pin(la[-1], reason)
        ctx.graph.pin(lb[-1], reason)
        for axis in batch:
            ctx.graph.mark(axis, "heads")
    produce(ctx, b, lb[-1])
    return (*batch, la[-2], lb[-1])


@register("einsum")
def einsum(ctx: OpContext) -> Value:
    equation, operands = ctx.arg(0, "equation"), ctx.arg(1, "tensors")
    if not isinstance(equation, str) or "..." in equation or "->" not in equation \
            or not isinstance(operands, (list, tuple)):
        return ctx.unknown("an einsum with broadcasting")
    inputs, output = equation.replace(" ", "").split("->")
    specs = inputs.split(",")
    layouts = [ctx.layout(o) for o in operands]
    if len(specs) != len(layouts) or any(x is None or len(x) != len(s)
                                         for x, s in zip(layouts, specs, strict=True)):
        return ctx.unknown("an einsum of unexpected shapes")
    seen: dict[str, Axis] = {}
    for spec, layout in zip(specs, layouts, strict=True):
        for letter, axis in zip(spec, layout or (), strict=True):
            if letter in seen:
                ctx.unify(seen[letter], axis, "an einsum")
            else:
                seen[letter] = axis
    if not any(ctx.is_param(o) for o in operands):
        for letter, axis in seen.items():
            if letter not in output:
                ctx.graph.pin(axis, ctx.reason("contracted between two activations"))
    for operand, spec, layout in zip(operands, specs, layouts, strict=True):
        for letter, axis in zip(spec, layout or (), strict=True):
            if letter in output:
                produce(ctx, operand, axis)
    return tuple(seen[letter] for letter in output)


# ---- convolution --------------------------------------------------------------------------

@register("conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
          "conv_transpose2d", "conv_transpose3d")
def conv(ctx: OpContext) -> Value:
    from slimkit.graph.axes_rules import op_name

    name = op_name(ctx.node)
    transposed = name.startswith("conv_transpose") or (
        name in ("convolution", "_convolution") and bool(ctx.arg(6, "transposed", False)))
    groups_at = {"convolution": 8, "_convolution": 8}.get(name, 7 if transposed else 6)
    groups = ctx.arg(groups_at, "groups", 1)
    x, w, shape = ctx.layout(ctx.arg(0, "input")), ctx.layout(ctx.arg(1, "weight")), ctx.shape()
    if x is None or w is None or shape is None or not isinstance(groups, int):
        return ctx.unknown("a convolution without a known weight")
    for axis in w[2:]:
        ctx.graph.pin(axis, ctx.reason("a kernel axis"))
    reason = ctx.reason("a grouped convolution")
    out_axis, in_axis = (w[1], w[0]) if transposed else (w[0], w[1])
    channels = axis_size(x[1])
    if groups == 1:
        ctx.unify(x[1], in_axis, "a convolution's input")
    elif not transposed and groups == channels and axis_size(w[1]) == 1:  # depthwise
        per_input = axis_size(w[0]) // channels
        if per_input == 1:
            ctx.unify(w[0], x[1], "a depthwise convolution")
        else:  # a channel multiplier: each input channel makes several outputs
            flat_in = ctx.graph.flat(x[1])
            for i, atom in enumerate(ctx.graph.flat(w[0])):
                ctx.graph.derive(atom, (flat_in[i // per_input], None), reason)
        ctx.graph.pin(w[1], reason)
    else:  # grouped: the same positions in every group, inputs and outputs alike
        _grouped(ctx, x[1], groups, in_axis, reason)
        out_axis = _grouped_out(ctx, out_axis, groups, reason)
    _bias(ctx, ctx.arg(2, "bias"), out_axis, "a convolution's bias")
    produce(ctx, ctx.arg(1, "weight"), out_axis)
    spatial = [a if axis_size(a) == d else fixed(d) for a, d in zip(x[2:], shape[2:],
                                                                     strict=True)]
    for axis, d in zip(x[2:], shape[2:], strict=True):
        if axis_size(axis) != d:
            ctx.graph.pin(axis, ctx.reason("a convolution's spatial axis"))
    return (x[0], out_axis, *spatial)


def _grouped(ctx: OpContext, channels: Axis, groups: int, per_group: Axis,
             reason: str) -> None:
    size = axis_size(per_group)
    flat, inner = ctx.graph.flat(channels), ctx.graph.flat(per_group)
    if len(flat) != groups * size:
        ctx.graph.pin(channels, reason)
        return
    for i, atom in enumerate(flat):
        ctx.graph.derive(atom, (None, inner[i % size]), reason)


def _grouped_out(ctx: OpContext, axis: Axis, groups: int, reason: str) -> Axis:
    size = axis_size(axis) // groups
    inner = ctx.graph.tracked(size)
    _grouped(ctx, axis, groups, inner, reason)
    return axis


# ---- norms and embeddings -----------------------------------------------------------------

@register("batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
          "native_batch_norm", "instance_norm", "_batch_norm_impl_index",
          "_native_batch_norm_legit_functional")
def batch_norm(ctx: OpContext) -> Value:
    x = ctx.layout(ctx.arg(0, "input"))
    if x is None or len(x) < 2:
        return ctx.unknown("a norm without a channel axis")
    for index, name in ((1, "weight"), (2, "bias"), (3, "running_mean"), (4, "running_var")):
        _bias(ctx, ctx.arg(index, name), x[1], "a norm's statistics")
    out = ctx.fixed_output()
    if isinstance(out, list):
        return [x, *out[1:]]
    return x


@register("layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm")
def layer_norm(ctx: OpContext) -> Value:
    x, shape = ctx.layout(ctx.arg(0, "input")), ctx.arg(1, "normalized_shape")
    if x is None or not isinstance(shape, (list, tuple)) or len(shape) > len(x):
        return ctx.unknown("a norm over unknown axes")
    axes = x[len(x) - len(shape):]
    from slimkit.graph.axes_rules import op_name

    arg_names = ((2, "weight"),) if op_name(ctx.node).startswith(("rms", "_fused")) \
        else ((2, "weight"), (3, "bias"))
    for index, name in arg_names:
        weight = ctx.layout(ctx.arg(index, name))
        if weight is not None and len(weight) == len(axes):
            for a, b in zip(axes, weight, strict=True):
                ctx.unify(a, b, "a norm's weight")
    for axis in axes:
        ctx.graph.mark(axis, "hidden")
    out = ctx.fixed_output()
    return [x, *out[1:]] if isinstance(out, list) else x


@register("group_norm", "native_group_norm")
def group_norm(ctx: OpContext) -> Value:
    from slimkit.graph.axes_rules import op_name

    native = op_name(ctx.node) == "native_group_norm"
    x = ctx.layout(ctx.arg(0, "input"))
    groups = ctx.arg(7 if native else 1, "group" if native else "num_groups")
    if x is None or len(x) < 2 or not isinstance(groups, int):
        return ctx.unknown("a group norm without a channel axis")
    reason = ctx.reason("a group norm")
    per_group = ctx.graph.tracked(axis_size(x[1]) // groups)
    _grouped(ctx, x[1], groups, per_group, reason)
    for index, name in ((1, "weight"), (2, "bias")) if native else ((2, "weight"), (3, "bias")):
        _bias(ctx, ctx.arg(index, name), x[1], "a norm's weight")
    out = ctx.fixed_output()
    return [x, *out[1:]] if isinstance(out, list) else x


@register("embedding")
def embedding(ctx: OpContext) -> Value:
    w, ids = ctx.layout(ctx.arg(0, "weight")), ctx.layout(ctx.arg(1, "indices"))
    if w is None or ids is None or len(w) != 2:
        return ctx.unknown("an embedding without a 2-D table")
    ctx.graph.pin(w[0], ctx.reason("rows looked up by ids"))
    ctx.graph.mark(w[1], "hidden")
    produce(ctx, ctx.arg(0, "weight"), w[1])
    return (*ids, w[1])


@register("_weight_norm", "_weight_norm_interface")
def weight_norm(ctx: OpContext) -> Value:
    v, g, dim = ctx.layout(ctx.arg(0, "v")), ctx.layout(ctx.arg(1, "g")), ctx.arg(2, "dim", 0)
    if v is None or not isinstance(dim, int):
        return ctx.unknown("a weight norm of unknown axes")
    dim %= len(v)
    if g is not None and len(g) == len(v):
        ctx.unify(g[dim], v[dim], "a weight norm's scale")
    out = ctx.fixed_output()
    return [v, *out[1:]] if isinstance(out, list) else v
