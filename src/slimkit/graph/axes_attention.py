"""Axis-graph rules of the ops that mix positions: attention (``scaled_dot_product_attention``:
heads coupled across query, key and value, grouped-query heads as products, the head size
kept), recurrent layers (hidden units coupled across gates, layers and directions) and
pooling/resizing (channels pass, resized axes are positional). See ``axes.py``."""

from __future__ import annotations

from torch import fx

from slimkit.graph.axes import Axis, Factor, Layout, axis_size, fixed
from slimkit.graph.axes_layers import broadcast_into, produce
from slimkit.graph.axes_rules import OpContext, Value, op_name, register


@register("scaled_dot_product_attention", "_scaled_dot_product_attention_math",
          "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention")
def attention(ctx: OpContext) -> Value:
    q, k, v = (ctx.layout(ctx.arg(i, n)) for i, n in enumerate(("query", "key", "value")))
    shape = ctx.shape() or _first_shape(ctx)
    if q is None or k is None or v is None or len(q) < 3 or shape is None:
        return ctx.unknown("attention of unexpected shapes")
    reason = ctx.reason("attention (a head's size)")
    for axis in (q[-1], k[-1], v[-1]):
        ctx.graph.pin(axis, reason)
    ctx.unify(k[-2], v[-2], "attention keys and values")
    for qa, ka, va in zip(q[:-2], k[:-2], v[:-2], strict=True):
        ctx.unify(ka, va, "attention heads")
        if axis_size(qa) != axis_size(ka) and axis_size(qa) % axis_size(ka) == 0:
            group = axis_size(qa) // axis_size(ka)
            kv = ctx.graph.flat(ka)
            for i, atom in enumerate(ctx.graph.flat(qa)):  # grouped-query attention
                ctx.graph.derive(atom, (kv[i // group], None), reason)
        else:
            ctx.unify(qa, ka, "attention heads")
        ctx.graph.mark(qa, "heads")
    mask = ctx.arg(3, "attn_mask")
    out: Layout = (*q[:-1], v[-1])
    if mask is not None:
        broadcast_into(ctx, mask, (*q[:-1], k[-2]))
    value = ctx.fixed_output()
    return [out, *value[1:]] if isinstance(value, list) else out


def _first_shape(ctx: OpContext) -> tuple[int, ...] | None:
    val = ctx.node.meta.get("val")
    if isinstance(val, (list, tuple)) and val and hasattr(val[0], "shape"):
        return tuple(int(d) for d in val[0].shape)
    return None


GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@register(*GATES)
def recurrent(ctx: OpContext) -> Value:
    """Hidden units: the same positions in every gate's rows of every layer and direction
    (one ``hidden_size``); a layer above reads both directions' units."""
    name = op_name(ctx.node)
    x, hx, params = ctx.layout(ctx.arg(0, "input")), ctx.arg(1, "hx"), ctx.arg(2, "params")
    has_bias, layers = bool(ctx.arg(3, "has_biases")), int(ctx.arg(4, "num_layers"))
    directions = 2 if bool(ctx.arg(7, "bidirectional")) else 1
    per = 4 if has_bias else 2
    found = [ctx.layout(p) for p in params] if isinstance(params, (list, tuple)) else []
    weights = [w for w in found if w is not None and len(w) >= 1]
    if x is None or len(weights) != per * layers * directions or len(found) != len(weights) \
            or len(weights[1]) != 2:
        return ctx.unknown("a recurrent layer with projections")
    hidden = axis_size(weights[1][1])
    units = ctx.graph.tracked(hidden)
    reason = ctx.reason("recurrent hidden units")
    unit_atoms = ctx.graph.flat(units)
    for index, w in enumerate(weights):
        layer, kind = divmod(index, per)
        layer //= directions
        for i, atom in enumerate(ctx.graph.flat(w[0])):
            ctx.graph.derive(atom, (None, unit_atoms[i % hidden]), reason)
        if kind == 1:
            ctx.unify(w[1], units, "recurrent weights")
        elif kind == 0 and layer == 0:
            ctx.unify(w[1], x[-1], "a recurrent layer's input")
        elif kind == 0:
            for i, atom in enumerate(ctx.graph.flat(w[1])):
                ctx.graph.derive(atom, (None, unit_atoms[i % hidden]), reason)
    produce(ctx, params[0], weights[0][0])
    states = hx if isinstance(hx, (list, tuple)) else [hx]
    for state in states:
        layout = ctx.layout(state) if isinstance(state, fx.Node) else None
        if layout is not None:
            ctx.unify(layout[-1], units, "recurrent states")
    features: Axis = units if directions == 1 else (Factor(2), *units)
    out = (*x[:-1], features)
    batch = x[0] if bool(ctx.arg(8, "batch_first")) or len(x) < 3 else x[1]
    state_layout = (fixed(layers * directions), batch, units)
    return [out, *([state_layout] * (3 if name == "lstm" else 1))][: 3 if name == "lstm" else 2]


SPATIAL = ("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
           "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool1d",
           "adaptive_max_pool2d", "adaptive_max_pool3d", "max_pool2d_with_indices",
           "max_pool3d_with_indices", "max_pool1d_with_indices", "upsample_nearest1d",
           "upsample_nearest2d", "upsample_nearest3d", "upsample_bilinear2d",
           "upsample_bicubic2d", "upsample_linear1d", "upsample_trilinear3d",
           "_upsample_bilinear2d_aa", "_upsample_nearest_exact2d", "lp_pool2d", "lp_pool1d")


@register(*SPATIAL)
def spatial(ctx: OpContext) -> Value:
    """Pooling and resizing: the batch and channel axes pass; resized axes are positional."""
    x = ctx.layout(ctx.arg(0, "input"))
    out = ctx.fixed_output()
    first = out[0] if isinstance(out, list) else out
    if x is None or not isinstance(first, tuple) or len(first) != len(x):
        return ctx.unknown("pooling of unexpected shapes")
    result = []
    for axis, target in zip(x, first, strict=True):
        if axis_size(axis) == axis_size(target):
            result.append(axis)
        else:
            ctx.graph.pin(axis, ctx.reason("pooled or resized"))
            result.append(target)
    layout = tuple(result)
    return [layout, layout] if isinstance(out, list) else layout
