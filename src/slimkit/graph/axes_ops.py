"""Axis-graph rules of the ops without weights: element-wise ops (with broadcasting), layout
ops (view, permute, expand, cat, split...), reductions, indexing and tensor creation. See
``axes.py`` for the model and ``axes_rules.py`` for the registry."""

from __future__ import annotations

from collections import deque
from typing import Any

from torch import fx

from slimkit.graph.axes import Axis, AxisGraph, Factor, Layout, axis_size, fixed, fixed_layout
from slimkit.graph.axes_rules import OpContext, Value, register

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
            ctx.unify(axes[0], other, f"'{_name(ctx)}'")
        tracked = [a for a in axes if any(f.tracked for f in a)]
        result.append(tracked[0] if tracked else axes[0] if axes else fixed(size))
    return tuple(result)


@register(*NO_OUTPUT)
def no_output(ctx: OpContext) -> Value:
    return None


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
        if _name(ctx) in ("max", "min") and any(f.tracked for d in dims for f in layout[d]):
            return ctx.unknown("selects positions along a channel axis")
        shapes = _shapes(ctx.node.meta.get("val")) or []
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
    name = _name(ctx)
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


# ---- layout ops ---------------------------------------------------------------------------

@register("view", "reshape", "_unsafe_view", "view_copy", "flatten", "unflatten", "squeeze",
          "unsqueeze", "unsqueeze_copy", "squeeze_copy", "_reshape_alias")
def reshape(ctx: OpContext) -> Value:
    layout, shape = ctx.layout(ctx.arg(0, "self")), ctx.shape()
    if layout is None or shape is None:
        return ctx.unknown("input without a layout")
    out = reshape_layout(ctx.graph, layout, shape, ctx.reason("a reshape"))
    ctx.site(layout, out)
    return out


def reshape_layout(graph: AxisGraph, layout: Layout, shape: tuple[int, ...],
                   reason: str) -> Layout:
    """``layout`` viewed as ``shape``: factors regrouped in order, split where an output axis
    ends inside one; where no regrouping exists everything is pinned."""
    queue = deque(f for axis in layout for f in axis if f.size != 1 or f.tracked)
    out: list[Axis] = []
    for size in shape:
        parts: list[Factor] = []
        need = size
        while queue and queue[0].size == 1 and (need == 1 or queue[0].tracked):
            parts.append(queue.popleft())
        while need > 1:
            if not queue:
                return _pinned(graph, layout, shape, reason)
            factor = queue.popleft()
            if factor.size == 1:
                parts.append(factor)
            elif need % factor.size == 0:
                parts.append(factor)
                need //= factor.size
            elif factor.size % need == 0:
                head, tail = graph.split(factor, (need, factor.size // need), reason)
                parts.append(head)
                queue.appendleft(tail)
                need = 1
            else:
                return _pinned(graph, layout, shape, reason)
        out.append(merge_fixed(tuple(parts)) if parts else fixed(size))
    for left in queue:
        graph.pin((left,), reason)
    return tuple(out)


def _pinned(graph: AxisGraph, layout: Layout, shape: tuple[int, ...], reason: str) -> Layout:
    graph.pin(layout, reason + " that mixes channels with other axes")
    return fixed_layout(shape)


def merge_fixed(axis: tuple[Factor, ...]) -> Axis:
    """Adjacent fixed factors as one; size-1 fixed factors dropped (an axis keeps one)."""
    out: list[Factor] = []
    for factor in axis:
        if factor.atoms is None and factor.size == 1:
            continue
        if out and out[-1].atoms is None and factor.atoms is None:
            out[-1] = Factor(out[-1].size * factor.size)
        else:
            out.append(factor)
    return tuple(out) if out else fixed(1)


@register("permute", "transpose", "t", "movedim", "swapaxes", "swapdims", "numpy_T",
          "permute_copy", "transpose_copy", "adjoint", "mT")
def permute(ctx: OpContext) -> Value:
    layout = ctx.layout(ctx.arg(0, "self"))
    if layout is None:
        return ctx.unknown("input without a layout")
    rank, name = len(layout), _name(ctx)
    order = list(range(rank))
    if name in ("permute", "permute_copy"):
        order = [int(d) % rank for d in ctx.arg(1, "dims")]
    elif name in ("t", "numpy_T", "adjoint", "mT") or rank < 2:
        order = order[::-1] if name in ("t", "numpy_T") else order[:-2] + order[-2:][::-1]
    elif name == "movedim":
        src, dst = int(ctx.arg(1, "source")) % rank, int(ctx.arg(2, "destination")) % rank
        order.insert(dst, order.pop(src))
    else:
        a, b = int(ctx.arg(1, "dim0")) % rank, int(ctx.arg(2, "dim1")) % rank
        order[a], order[b] = order[b], order[a]
    return tuple(layout[i] for i in order)


@register("expand", "expand_copy", "broadcast_to", "expand_as")
def expand(ctx: OpContext) -> Value:
    layout, shape = ctx.layout(ctx.arg(0, "self")), ctx.shape()
    if layout is None or shape is None:
        return ctx.unknown("input without a layout")
    offset = len(shape) - len(layout)
    out: list[Axis] = [fixed(d) for d in shape[:offset]]
    for axis, size in zip(layout, shape[offset:], strict=True):
        if axis_size(axis) == size:
            out.append(axis)
        else:
            ctx.graph.pin(axis, ctx.reason("expanded"))
            out.append(fixed(size))
    return tuple(out)


@register("repeat", "tile")
def repeat(ctx: OpContext) -> Value:
    layout, shape = ctx.layout(ctx.arg(0, "self")), ctx.shape()
    if layout is None or shape is None:
        return ctx.unknown("input without a layout")
    offset = len(shape) - len(layout)
    out: list[Axis] = [fixed(d) for d in shape[:offset]]
    for axis, size in zip(layout, shape[offset:], strict=True):
        times = size // max(axis_size(axis), 1)
        out.append(axis if times == 1 else merge_fixed((Factor(times), *axis)))
    return tuple(out)


@register("repeat_interleave")
def repeat_interleave(ctx: OpContext) -> Value:
    layout, shape = ctx.layout(ctx.arg(0, "self")), ctx.shape()
    dim = ctx.arg(2, "dim", None)
    if layout is None or shape is None or not isinstance(dim, int) \
            or not isinstance(ctx.arg(1, "repeats"), int):
        return ctx.unknown("repeats along a flattened or data-dependent axis")
    dim %= len(layout)
    times = shape[dim] // max(axis_size(layout[dim]), 1)
    return tuple(merge_fixed((*a, Factor(times))) if i == dim else a
                 for i, a in enumerate(layout))


@register("slice", "narrow", "slice_copy")
def slice_(ctx: OpContext) -> Value:
    """A slice of a channel axis keeps positions by number: it pins them, unless it takes
    whole blocks of a fixed outer factor (a chunk of a fused projection)."""
    layout, shape = ctx.layout(ctx.arg(0, "self")), ctx.shape()
    if layout is None or shape is None:
        return ctx.unknown("input without a layout")
    dim = int(ctx.arg(1, "dim", 0)) % len(layout)
    axis = layout[dim]
    size, new = axis_size(axis), shape[dim]
    if new == size:
        return layout
    out: Axis = fixed(new)
    if any(f.tracked for f in axis):
        start = _start(ctx, size)
        inner = axis_size(axis[1:]) if len(axis) > 1 else 0
        step = ctx.arg(4, "step", 1) if _name(ctx) != "narrow" else 1
        if axis[0].atoms is None and inner and step == 1 and start % inner == 0 \
                and new % inner == 0:
            out = merge_fixed((Factor(new // inner), *axis[1:]))
        else:
            ctx.graph.pin(axis, ctx.reason("sliced at fixed positions"))
    return tuple(out if i == dim else a for i, a in enumerate(layout))


def _start(ctx: OpContext, size: int) -> int:
    start = ctx.arg(2, "start", 0)
    start = 0 if start is None else int(start) if isinstance(start, int) else 0
    return start + size if start < 0 else min(start, size)


@register("select", "select_copy")
def select(ctx: OpContext) -> Value:
    layout = ctx.layout(ctx.arg(0, "self"))
    if layout is None:
        return ctx.unknown("input without a layout")
    dim = int(ctx.arg(1, "dim")) % len(layout)
    ctx.graph.pin(layout[dim], ctx.reason("one position selected"))
    return tuple(a for i, a in enumerate(layout) if i != dim)


@register("split", "split_with_sizes", "chunk", "tensor_split", "unsafe_split",
          "unsafe_chunk", "split_copy")
def split(ctx: OpContext) -> Value:
    """Equal chunks (``chunk``, ``split(size)``) keep the same positions in every chunk;
    chunks of given sizes (``split_with_sizes``: sizes from the module) are ranges."""
    layout = ctx.layout(ctx.arg(0, "self"))
    shapes = _shapes(ctx.node.meta.get("val"))
    dim = ctx.arg(2, "dim", 0) if _name(ctx) != "chunk" else ctx.arg(2, "dim", 0)
    if layout is None or shapes is None or not isinstance(dim, int):
        return ctx.unknown("input without a layout")
    dim %= len(layout)
    axis = layout[dim]
    sizes = [s[dim] for s in shapes]
    ctx.site(layout)
    if not any(f.tracked for f in axis):
        parts: list[Axis] = [fixed(n) for n in sizes]
    elif len(set(sizes)) == 1 and _name(ctx) != "split_with_sizes":
        reason = ctx.reason("equal chunks")
        blocks = ctx.graph.split(Factor(axis_size(axis), ctx.graph.flat(axis)),
                                 (len(sizes), sizes[0]), reason)
        ctx.graph.pin((blocks[0],), reason)  # the chunk index itself
        parts = [(blocks[1],) for _ in sizes]
    else:
        flat, parts, start = ctx.graph.flat(axis), [], 0
        for n in sizes:
            parts.append((Factor(n, flat[start:start + n]),))
            start += n
    return [tuple(p if i == dim else a for i, a in enumerate(layout)) for p in parts]


def _shapes(val: Any) -> list[tuple[int, ...]] | None:
    if isinstance(val, (list, tuple)) and all(hasattr(v, "shape") for v in val):
        return [tuple(int(d) for d in v.shape) for v in val]
    return None


@register("unbind")
def unbind(ctx: OpContext) -> Value:
    layout = ctx.layout(ctx.arg(0, "self"))
    shapes = _shapes(ctx.node.meta.get("val"))
    if layout is None or shapes is None:
        return ctx.unknown("input without a layout")
    dim = int(ctx.arg(1, "dim", 0)) % len(layout)
    ctx.graph.pin(layout[dim], ctx.reason("unbound into positions"))
    rest = tuple(a for i, a in enumerate(layout) if i != dim)
    return [rest for _ in shapes]


@register("cat", "concat", "concatenate")
def cat(ctx: OpContext) -> Value:
    tensors = ctx.arg(0, "tensors")
    shape = ctx.shape()
    layouts = [ctx.layout(t) for t in tensors] if isinstance(tensors, (list, tuple)) else []
    if shape is None or not layouts or any(x is None for x in layouts):
        return ctx.unknown("inputs without a layout")
    dim = int(ctx.arg(1, "dim", 0)) % len(shape)
    present = [x for x in layouts if x is not None and len(x) == len(shape)]
    out: list[Axis] = []
    for i in range(len(shape)):
        if i == dim:
            atoms = tuple(a for x in present for a in ctx.graph.flat(x[i]))
            out.append((Factor(len(atoms), atoms),) if any(a is not None for a in atoms)
                       else fixed(len(atoms)))
            continue
        for other in present[1:]:
            ctx.unify(present[0][i], other[i], "'cat'")
        out.append(present[0][i])
    return tuple(out)


@register("stack")
def stack(ctx: OpContext) -> Value:
    tensors = ctx.arg(0, "tensors")
    layouts = [ctx.layout(t) for t in tensors] if isinstance(tensors, (list, tuple)) else []
    shape = ctx.shape()
    if shape is None or not layouts or any(x is None for x in layouts):
        return ctx.unknown("inputs without a layout")
    dim = int(ctx.arg(1, "dim", 0)) % len(shape)
    first = layouts[0] or ()
    for other in layouts[1:]:
        for a, b in zip(first, other or (), strict=False):
            ctx.unify(a, b, "'stack'")
    return (*first[:dim], fixed(len(layouts)), *first[dim:])


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
            if index_layout is not None and _name(ctx) != "index_select":
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


def _name(ctx: OpContext) -> str:
    from slimkit.graph.axes_rules import op_name

    return op_name(ctx.node)
