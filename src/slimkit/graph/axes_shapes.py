"""Axis-graph rules of the layout ops: reshapes (split and merged axes become products of
factors, see ``axes.py``), permutations, expand and repeat, slices and selections, splits into
chunks, concatenation and stacking."""

from __future__ import annotations

from collections import deque

from slimkit.graph.axes import Axis, AxisGraph, Factor, Layout, axis_size, fixed, fixed_layout
from slimkit.graph.axes_rules import OpContext, Value, op_name, register, tuple_shapes


@register("view", "reshape", "_unsafe_view", "view_copy", "flatten", "unflatten", "squeeze",
          "unsqueeze", "unsqueeze_copy", "squeeze_copy", "_reshape_alias", "reshape_as",
          "view_as", "ravel")
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
    rank, name = len(layout), op_name(ctx.node)
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
        step = ctx.arg(4, "step", 1) if op_name(ctx.node) != "narrow" else 1
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
    shapes = tuple_shapes(ctx.node.meta.get("val"))
    dim = ctx.arg(2, "dim", 0) if op_name(ctx.node) != "chunk" else ctx.arg(2, "dim", 0)
    if layout is None or shapes is None or not isinstance(dim, int):
        return ctx.unknown("input without a layout")
    dim %= len(layout)
    axis = layout[dim]
    sizes = [s[dim] for s in shapes]
    ctx.site(layout)
    if not any(f.tracked for f in axis):
        parts: list[Axis] = [fixed(n) for n in sizes]
    elif len(set(sizes)) == 1 and op_name(ctx.node) != "split_with_sizes":
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


@register("unbind")
def unbind(ctx: OpContext) -> Value:
    layout = ctx.layout(ctx.arg(0, "self"))
    shapes = tuple_shapes(ctx.node.meta.get("val"))
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
