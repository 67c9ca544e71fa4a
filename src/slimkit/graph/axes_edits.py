"""From decisions on the leaves of an axis graph to edits of a model: which positions of each
parameter axis stay (:func:`param_edits`), which axis would be emptied (:func:`emptied`), and
which size attributes of the modules that reshape those axes change (:func:`attribute_edits`:
``num_heads`` when heads go, ``split_size`` when a fused projection shrinks...)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from slimkit.graph.axes import Axis, AxisGraph, axis_size
from slimkit.graph.axes_trace import AxisTrace
from slimkit.graph.slicing import AttrEdit, ParamEdit, has_size_rule

# size attributes of attention-like modules, by what they count
COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads", "attention_heads",
               "num_key_value_heads", "num_kv_heads", "n_kv_heads", "num_kv", "heads", "kv_heads",
               "n_kv_head", "num_heads_kv", "multi_query_group_num")
WIDTH_ATTRS = ("all_head_size", "inner_dim", "split_size", "embed_dim", "hidden_size",
               "d_model", "n_embd", "dim", "hidden_dim", "embed_size", "attention_dim",
               "kv_dim", "q_dim", "projection_dim", "intermediate_size", "inner_size")


@dataclass
class AxisIndex:
    """For every parameter axis with prunable positions: each position's prunable leaves."""

    positions: dict[tuple[str, int], list[list[int]]] = field(default_factory=dict)

    @classmethod
    def build(cls, graph: AxisGraph, prunable: set[int]) -> AxisIndex:
        index = cls()
        for name, layout in graph.params.items():
            for axis, factors in enumerate(layout):
                atoms = [a for f in factors if f.atoms is not None for a in f.atoms]
                rows = [[leaf for _, leaf in graph.leaves(a) if leaf in prunable]
                        for a in atoms]
                if any(rows):
                    index.positions[(name, axis)] = rows
        return index

    def kept(self, key: tuple[str, int], removed: set[int]) -> list[int]:
        return [i for i, leaves in enumerate(self.positions[key])
                if not any(leaf in removed for leaf in leaves)]


def param_edits(trace: AxisTrace, index: AxisIndex, removed: set[int]) -> tuple[ParamEdit, ...]:
    """The kept positions of every parameter and buffer an axis of which loses some."""
    edits: dict[str, dict[int, tuple[int, ...]]] = {}
    for (name, axis), rows in index.positions.items():
        kept = index.kept((name, axis), removed)
        if len(kept) < len(rows):
            edits.setdefault(name, {})[axis] = tuple(kept)
    return tuple(ParamEdit(name, _shape(trace.graph, name), tuple(sorted(keep.items())))
                 for name, keep in edits.items())


def emptied(index: AxisIndex, removed: set[int]) -> list[tuple[str, int]]:
    """Parameter axes that would keep no position."""
    return [key for key in index.positions if not index.kept(key, removed)]


def _shape(graph: AxisGraph, name: str) -> tuple[int, ...]:
    return tuple(axis_size(axis) for axis in graph.params[name])


def attribute_edits(trace: AxisTrace, root: nn.Module, removed: set[int]) -> tuple[AttrEdit, ...]:
    """Size attributes of the (non-torch.nn) modules whose reshapes change: a count attribute
    equal to an old factor count (heads) or a width attribute equal to an old axis size
    takes the new value; an attribute two changes disagree on is left alone."""
    pairs: dict[str, dict[str, dict[int, set[int]]]] = {}
    for site in trace.sites:
        found = pairs.setdefault(site.module, {"count": {}, "width": {}})
        for layout in site.layouts:
            for axis in layout:
                old, new = _sizes(trace.graph, axis, removed)
                if old != new:
                    found["width"].setdefault(old, set()).add(new)
                    found["count"].setdefault(old, set()).add(new)
                for factor in axis if len(axis) > 1 else ():
                    f_old, f_new = _sizes(trace.graph, (factor,), removed)
                    if f_old != f_new:
                        found["count"].setdefault(f_old, set()).add(f_new)
    edits = []
    for module_name, found in pairs.items():
        try:
            module = root.get_submodule(module_name) if module_name else root
        except AttributeError:
            continue
        if type(module).__module__.startswith("torch.nn") or has_size_rule(module):
            continue  # layers whose sizes follow their weights (slicing.SIZE_RULES)
        for role, names in (("count", COUNT_ATTRS), ("width", WIDTH_ATTRS)):
            for attr in names:
                value = module.__dict__.get(attr)
                if isinstance(value, bool) or not isinstance(value, int):
                    continue
                targets = found[role].get(value)
                if targets is not None and len(targets) == 1:
                    edits.append(AttrEdit(module_name, attr, value, next(iter(targets))))
    return tuple(dict.fromkeys(edits))


def _sizes(graph: AxisGraph, axis: Axis, removed: set[int]) -> tuple[int, int]:
    """An axis's size before and after removing ``removed`` leaves."""
    old = new = 1
    for factor in axis:
        old *= factor.size
        if factor.atoms is None:
            new *= factor.size
            continue
        new *= sum(1 for a in factor.atoms
                   if a is None or not any(leaf in removed for _, leaf in graph.leaves(a)))
    return old, new
