"""Axis-graph rules of the ops without weights that do not move axes: element-wise ops (with
broadcasting), reductions, positional ops, indexing, padding and tensor creation. Layout ops
(view, permute, cat, split...) are in ``axes_shapes.py``. See ``axes.py`` for the model and
``axes_rules.py`` for the registry."""

from __future__ import annotations

from torch import fx

from slimkit.graph.axes import Axis, Layout, axis_size, fixed, fixed_layout
from slimkit.graph.axes_rules import OpContext, Value, op_name, register, tuple_shapes

UNARY = ("abs", "neg", "exp", "log", "log1p", "sqrt", "rsqrt", "reciprocal", "sign", "floor",
         "ceil", "round", "trunc", "sin", "cos", "tanh", "sigmoid", "relu", "relu6", "gelu",
         "silu", "mish", "elu", "selu", "celu", "leaky_relu", "hardswish", "hardsigmoid",
         "hardtanh", "softplus", "erf", "logical_not", "bitwise_not", "isnan", "isinf",
         "nan_to_num", "clamp", "clamp_min", "clamp_max", "clip", "dropout", "alpha_dropout",
         "feature_dropout", "contiguous", "clone", "alias", "detach", "lift_fresh_copy", "to",
         "_to_copy", "type_as", "fill", "zero", "square", "exp2", "expm1", "sigmoid_backward",
         "prelu", "glu_", "log_sigmoid", "softsign", "tanhshrink", "threshold", "rrelu",
         "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like")
BINARY = ("add", "sub", "rsub", "mul", "div", "true_divide", "floor_divide", "remainder", "fmod",
          "pow", "maximum", "minimum", "max_other", "atan2", "eq", "ne", "lt", "le", "gt",
          "ge", "__and__", "__or__", "__xor__", "bitwise_and", "bitwise_or", "bitwise_xor",
          "logical_and", "logical_or", "logical_xor", "where", "masked_fill", "lerp", "addcmul",
          "addcdiv", "hypot", "copy", "copysign", "xlogy", "fmax", "fmin")
NO_OUTPUT = ("sym_size", "sym_numel", "sym_stride", "sym_storage_offset", "_assert_async",
             "_assert_scalar", "_assert_tensor_metadata", "item", "_local_scalar_dense",
             "sym_constrain_range_for_size", "_check_is_size")


@register(*UNARY, *BINARY)
def elementwise(ctx: OpContext) -> Value:
    """Operands broadcast from the right; axes of the output's size are coupled."""
    out = ctx.shape()
    if out is None:
        return None
    candidates: list[list[Axis]] = [[] for _ in out]
    for node in ctx.tensors():
        layout, shape = ctx.layout(node), ctx.shape(node)
        if layout is None or shape is None:
            continue
        for j, axis in enumerate(layout):
            i = j + len(out) - len(shape)
            if i < 0:
                ctx.graph.pin(axis, ctx.reason("reduced by broadcasting"))
            elif shape[j] == out[i]:
                candidates[i].append(axis)
            elif any(f.tracked for f in axis):
                ctx.graph.pin(axis, ctx.reason("broadcast"))
    result = []
    for size, axes in zip(out, candidates, strict=True):
        for other in axes[1:]:
            ctx.unify(axes[0], other, f"'{op_name(ctx.node)}'")
        tracked = [a for a in axes if any(f.tracked for f in a)]
        result.append(tracked[0] if tracked else axes[0] if axes else fixed(size))
    return tuple(result)


@register(*NO_OUTPUT)
def no_output(ctx: OpContext) -> Value:
    return None


@register("native_dropout")
def native_dropout(ctx: OpContext) -> Value:
    """(output, mask), both shaped like the input."""
    layout = ctx.layout(ctx.arg(0, "input"))
    return [layout, layout] if layout is not None else ctx.unknown("input without a layout")


@register("softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax")
def softmax(ctx: OpContext) -> Value:
    return ctx.layout(ctx.arg(0, "self"))


@register("mean", "sum", "amax", "amin", "var", "std", "norm", "logsumexp", "prod",
          "var_mean", "any", "all", "max", "min", "linalg_vector_norm")
def reduce(ctx: OpContext) -> Value:
    """Reduced axes vanish (or keep size 1); reducing over a channel axis is allowed (a norm
    over channels: marked hidden when the size is kept)."""
    layout = ctx.layout(ctx.arg(0, "self"))
    if layout is None:
        return ctx.unknown("input without a layout")
    if len(ctx.tensors()) > 1:  # max(a, b), min(a, b): element-wise
        return elementwise(ctx)
    out = ctx.fixed_output()
    dims = _dims(ctx, len(layout))
    if isinstance(out, list):  # max/min/var_mean with a dim: a tuple of tensors
        if op_name(ctx.node) in ("max", "min") and any(f.tracked for d in dims for f in layout[d]):
            return ctx.unknown("selects positions along a channel axis")
        shapes = tuple_shapes(ctx.node.meta.get("val")) or []
        return [_reduced(ctx, layout, dims, s) for s in shapes]
    shape = ctx.shape()
    if shape is None:
        return None
    return _reduced(ctx, layout, dims, shape)


def _reduced(ctx: OpContext, layout: Layout, dims: set[int], shape: tuple[int, ...]) -> Layout:
    if shape is None:
        return None
    keep = len(shape) == len(layout)
    result: list[Axis] = []
    for i, axis in enumerate(layout):
        if i in dims:
            if keep:
                result.append(fixed(1))
                if any(f.tracked for f in axis):
                    ctx.graph.mark(axis, "hidden")
        else:
            result.append(axis)
    return tuple(result) if len(result) == len(shape) else fixed_layout(shape)


def _dims(ctx: OpContext, rank: int) -> set[int]:
    dims = ctx.arg(1, "dim", None)
    if dims is None or isinstance(dims, bool):
        return set(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return {int(d) % rank for d in dims if isinstance(d, int)} if rank else set()


@register("argmax", "argmin", "cumsum", "cumprod", "sort", "topk", "flip", "roll", "tril",
          "triu", "diff", "cummax", "cummin", "kthvalue", "median", "mode")
def positional(ctx: OpContext) -> Value:
    """Ops where the order of positions matters: the axes they work along must stay whole."""
    layout = ctx.layout(ctx.arg(0, "self"))
    out = ctx.fixed_output()
    if layout is None:
        return out
    name = op_name(ctx.node)
    if name in ("tril", "triu"):
        along = {len(layout) - 1, len(layout) - 2}
    elif name == "roll" or name == "flip":
        dims = ctx.arg(2 if name == "roll" else 1, "dims", None)
        along = {int(d) % len(layout) for d in (dims if isinstance(dims, (list, tuple))
                                                else [dims])} if dims is not None \
            else set(range(len(layout)))
    else:
        along = _dims(ctx, len(layout))
    for i in along:
        ctx.graph.pin(layout[i], ctx.reason(f"'{name}' works along positions"))
    if isinstance(out, tuple) and len(out) == len(layout):
        return tuple(a if i not in along else out[i] for i, a in enumerate(layout))
    return out


# ---- creation and indexing ----------------------------------------------------------------

@register("zeros", "ones", "full", "empty", "new_zeros", "new_ones", "new_full", "new_empty",
          "empty_strided", "empty_permuted")
def uniform(ctx: OpContext) -> Value:
    """A tensor of one repeated value may shrink along any axis: fresh, unconstrained atoms."""
    shape = ctx.shape()
    return None if shape is None else tuple(ctx.graph.tracked(d) for d in shape)


@register("arange", "linspace", "rand", "randn", "randint", "randperm", "bernoulli",
          "tensor", "eye", "scalar_tensor")
def fixed_values(ctx: OpContext) -> Value:
    return ctx.fixed_output()


@register("index", "_unsafe_index")
def index(ctx: OpContext) -> Value:
    """``x[..., idx]`` with one index tensor: the indexed axis is pinned (positions picked
    by data); the others pass."""
    layout, shape = ctx.layout(ctx.arg(0, "self")), ctx.shape()
    indices = ctx.arg(1, "indices")
    if layout is None or shape is None or not isinstance(indices, (list, tuple)):
        return ctx.unknown("input without a layout")
    used = [i for i, ix in enumerate(indices) if ix is not None]
    if len(used) != 1:
        return ctx.unknown("indexes several axes at once")
    axis = used[0]
    ctx.graph.pin(layout[axis], ctx.reason("indexed by positions"))
    idx = indices[axis]
    idx_layout = ctx.layout(idx) if isinstance(idx, fx.Node) else None
    middle = idx_layout if idx_layout is not None else fixed_layout(
        tuple(shape[axis:axis + len(shape) - len(layout) + 1]))
    out = (*layout[:axis], *middle, *layout[axis + 1:])
    return out if len(out) == len(shape) else ctx.unknown("an index of unexpected shape")


@register("index_select", "gather", "take_along_dim")
def index_select(ctx: OpContext) -> Value:
    layout, shape = ctx.layout(ctx.arg(0, "self")), ctx.shape()
    if layout is None or shape is None or len(shape) != len(layout):
        return ctx.unknown("input without a layout")
    dim = int(ctx.arg(1, "dim")) % len(layout)
    ctx.graph.pin(layout[dim], ctx.reason("indexed by positions"))
    index_layout = ctx.layout(ctx.arg(2, "index"))
    out = []
    for i, (axis, size) in enumerate(zip(layout, shape, strict=True)):
        if i == dim:
            out.append(fixed(size))
        elif axis_size(axis) == size:
            if index_layout is not None and op_name(ctx.node) != "index_select":
                ctx.unify(axis, index_layout[i], "'gather'")
            out.append(axis)
        else:
            ctx.graph.pin(axis, ctx.reason("gathered"))
            out.append(fixed(size))
    return tuple(out)


@register("constant_pad_nd", "pad", "reflection_pad1d", "reflection_pad2d",
          "replication_pad1d", "replication_pad2d", "replication_pad3d", "reflection_pad3d")
def pad(ctx: OpContext) -> Value:
    """Padded axes are positional; others pass."""
    layout, shape = ctx.layout(ctx.arg(0, "self")), ctx.shape()
    if layout is None or shape is None:
        return ctx.unknown("input without a layout")
    out = []
    for axis, size in zip(layout, shape, strict=True):
        if axis_size(axis) == size:
            out.append(axis)
        else:
            ctx.graph.pin(axis, ctx.reason("padded"))
            out.append(fixed(size))
    return tuple(out)


@register("getitem")
def getitem(ctx: OpContext) -> Value:
    source, index = ctx.node.args[0], ctx.node.args[1]
    value = ctx.env.get(source) if isinstance(source, fx.Node) else None
    if isinstance(value, list) and isinstance(index, int) and index < len(value):
        return value[index]
    return ctx.fixed_output()

