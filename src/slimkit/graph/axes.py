"""Which positions of which tensor axes must be removed together: the *axis graph* of a model,
for structured pruning of any graph (``axes_trace.py`` builds it from ``torch.export``).

Every axis of every parameter gets one *atom* per position. Ops unify atoms (a Linear couples
its input's last axis with its weight's columns; an addition couples its operands), so the
classes of the union-find are positions that stand or fall together. A reshape that splits an
axis (``(batch, seq, heads * dim)`` -> ``(batch, seq, heads, dim)``) *defines* each position of
the flat axis as a product of positions of the new axes: removing a head removes ``dim``
positions of the flat axis, and the kept positions of every axis always form a grid, so shapes
stay consistent. Positions that are not a parameter's (a model input's axes, a constant's) are
*fixed*: an atom that meets one is *pinned* with the reason, and so is every atom an op the
graph does not understand touches. After tracing, the classes without a definition are the
*leaves*: the units that are decided. Leaves that appear on the same *producing* axis (the
rows of a weight that creates channels, at the same place in its product) form a *group*,
ranked and pruned at one ratio; a group with a pinned leaf is left whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Atom = int | None  # None: a fixed position (no parameter's; it never changes)


@dataclass(frozen=True)
class Factor:
    """A run of positions: ``atoms`` (one per position; None entries are fixed) or, when
    ``atoms`` is None, ``size`` fixed positions."""

    size: int
    atoms: tuple[Atom, ...] | None = None

    @property
    def tracked(self) -> bool:
        return self.atoms is not None and any(a is not None for a in self.atoms)


Axis = tuple[Factor, ...]  # positions in row-major order over the factors
Layout = tuple[Axis, ...]  # one axis per tensor dimension


def fixed(size: int) -> Axis:
    return (Factor(size),)


def axis_size(axis: Axis) -> int:
    return math.prod(f.size for f in axis)


def fixed_layout(shape: tuple[int, ...]) -> Layout:
    return tuple(fixed(d) for d in shape)


@dataclass
class AxisGroup:
    """Leaves ranked and pruned together; ``kind`` picks the ratio (heads, hidden, channels)."""

    id: int
    leaves: list[int]
    kind: str
    producers: list[str]
    pinned: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.pinned


class AxisGraph:
    """Atoms, their union-find, product definitions, pins and marks (see module docstring)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.defs: dict[int, tuple[Atom, ...]] = {}  # class root -> factor atoms
        self.pins: list[tuple[int, str]] = []
        self.marks: list[tuple[int, str]] = []  # (atom, "heads" | "hidden")
        self.producers: list[tuple[str, tuple[Atom, ...]]] = []  # (label, axis atoms)
        self.params: dict[str, Layout] = {}  # parameter and buffer layouts, by name
        self.skipped: list[dict[str, str]] = []

    # ---- atoms ----------------------------------------------------------------------
    def new(self, count: int) -> tuple[int, ...]:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return tuple(range(start, start + count))

    def tracked(self, count: int) -> Axis:
        return (Factor(count, self.new(count)),)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: Atom, b: Atom, reason: str) -> None:
        """Couple two positions; a fixed one pins the other."""
        work = [(a, b)]
        while work:
            x, y = work.pop()
            if x is None and y is None:
                continue
            if x is None or y is None:
                self.pin_atom(y if y is not None else x, reason)  # type: ignore[arg-type]
                continue
            rx, ry = self.find(x), self.find(y)
            if rx == ry:
                continue
            dx, dy = self.defs.pop(rx, None), self.defs.pop(ry, None)
            root, other = min(rx, ry), max(rx, ry)
            self.parent[other] = root
            if dx is not None and dy is not None:
                if len(dx) == len(dy):
                    work.extend(zip(dx, dy, strict=True))
                else:  # two different products of one position: keep it whole
                    for atom in (*dx, *dy):
                        if atom is not None:
                            self.pin_atom(atom, "reshaped two incompatible ways")
            definition = dx if dx is not None else dy
            if definition is not None:
                self.defs[root] = definition

    def derive(self, atom: Atom, factors: tuple[Atom, ...], reason: str) -> None:
        """Define ``atom`` as the product of ``factors`` (removed when any factor is)."""
        if atom is None:
            for f in factors:
                if f is not None:
                    self.pin_atom(f, reason)
            return
        product = self.new(1)[0]
        self.defs[product] = factors
        self.union(atom, product, reason)

    def pin_atom(self, atom: int, reason: str) -> None:
        self.pins.append((atom, reason))

    def pin(self, axes: Layout | Axis | None, reason: str) -> None:
        """Pin every atom of a layout or an axis."""
        for atom in _atoms_of(axes):
            self.pin_atom(atom, reason)

    def mark(self, axis: Axis, label: str) -> None:
        self.marks.extend((a, label) for a in flat_atoms(axis) if a is not None)

    # ---- axes -----------------------------------------------------------------------
    def flat(self, axis: Axis) -> tuple[Atom, ...]:
        """One atom per position of ``axis``; positions of several factors get new atoms
        defined as products."""
        if len(axis) == 1:
            only = axis[0]
            return only.atoms if only.atoms is not None else (None,) * only.size
        if not any(f.tracked for f in axis):
            return (None,) * axis_size(axis)
        out = []
        for index in range(axis_size(axis)):
            parts = _split_index(index, [f.size for f in axis])
            factors = tuple(f.atoms[i] if f.atoms is not None else None
                            for f, i in zip(axis, parts, strict=True))
            atom = self.new(1)[0]
            self.defs[atom] = factors
            out.append(atom)
        return tuple(out)

    def unify(self, a: Axis, b: Axis, reason: str) -> None:
        """Couple two axes of the same size, position by position."""
        if axis_size(a) != axis_size(b):
            self.pin(a, reason)
            self.pin(b, reason)
            return
        if not any(f.tracked for f in (*a, *b)):
            return
        if [f.size for f in a] == [f.size for f in b]:
            for fa, fb in zip(a, b, strict=True):
                xs = fa.atoms or (None,) * fa.size
                ys = fb.atoms or (None,) * fb.size
                for x, y in zip(xs, ys, strict=True):
                    self.union(x, y, reason)
            return
        for x, y in zip(self.flat(a), self.flat(b), strict=True):
            self.union(x, y, reason)

    def split(self, factor: Factor, sizes: tuple[int, ...], reason: str) -> list[Factor]:
        """``factor`` as consecutive factors of ``sizes`` (row-major)."""
        if factor.atoms is None:
            return [Factor(s) for s in sizes]
        parts = [Factor(s, self.new(s)) for s in sizes]
        for index, atom in enumerate(factor.atoms):
            positions = _split_index(index, list(sizes))
            self.derive(atom, tuple(p.atoms[i] for p, i in zip(parts, positions, strict=True)
                                    if p.atoms is not None), reason)
        return parts

    # ---- results --------------------------------------------------------------------
    def leaves(self, atom: Atom) -> list[tuple[tuple[int, ...], int]]:
        """The leaf classes behind ``atom``, each with its place in the product (a path)."""
        if atom is None:
            return []
        out: list[tuple[tuple[int, ...], int]] = []
        work: list[tuple[tuple[int, ...], int]] = [((), atom)]
        seen = 0
        while work and seen < 10_000:
            seen += 1
            path, current = work.pop()
            root = self.find(current)
            definition = self.defs.get(root)
            if definition is None:
                out.append((path, root))
                continue
            for i, part in enumerate(definition):
                if part is not None:
                    work.append(((*path, i), part))
        return out

    def groups(self) -> list[AxisGroup]:
        """The groups of leaves (see the module docstring), in the order producers appear."""
        link: dict[int, int] = {}

        def top(x: int) -> int:
            while link.get(x, x) != x:
                x = link[x]
            return x

        order: dict[int, None] = {}
        producer_of: dict[int, dict[str, None]] = {}
        for label, atoms in self.producers:
            slots: dict[tuple[int, ...], int] = {}
            for atom in atoms:
                for path, leaf in self.leaves(atom):
                    order.setdefault(leaf, None)
                    link.setdefault(leaf, leaf)
                    producer_of.setdefault(leaf, {})[label] = None
                    first = slots.setdefault(path, leaf)
                    a, b = top(first), top(leaf)
                    if a != b:
                        link[max(a, b)] = min(a, b)
        members: dict[int, list[int]] = {}
        for leaf in order:
            members.setdefault(top(leaf), []).append(leaf)
        pins = self._leaf_reasons(self.pins)
        marks = self._leaf_reasons(self.marks)
        groups = []
        for number, leaves in enumerate(members.values()):
            labels = {m for leaf in leaves for m in marks.get(leaf, ())}
            kind = "heads" if "heads" in labels else "hidden" if "hidden" in labels \
                else "channels"
            producers = list(dict.fromkeys(p for leaf in leaves for p in producer_of[leaf]))
            pinned = list(dict.fromkeys(r for leaf in leaves for r in pins.get(leaf, ())))
            groups.append(AxisGroup(number, leaves, kind, producers, pinned))
        return groups

    def _leaf_reasons(self, entries: list[tuple[int, str]]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for atom, reason in entries:
            for _, leaf in self.leaves(atom):
                bucket = out.setdefault(leaf, [])
                if reason not in bucket:
                    bucket.append(reason)
        return out


def flat_atoms(axis: Axis) -> list[Atom]:
    """The atoms of an axis's factors (not one per position: no products are made)."""
    return [a for f in axis if f.atoms is not None for a in f.atoms]


def _atoms_of(axes: Layout | Axis | None) -> list[int]:
    if not axes:
        return []
    if isinstance(axes[0], Factor):
        return [a for a in flat_atoms(axes) if a is not None]  # type: ignore[arg-type]
    return [a for axis in axes for a in flat_atoms(axis) if a is not None]  # type: ignore[arg-type]


def _split_index(index: int, sizes: list[int]) -> list[int]:
    """Row-major digits of ``index`` over ``sizes``.

    Example:
        >>> _split_index(5, [2, 3])
        [1, 2]
    """
    digits = []
    for size in reversed(sizes):
        digits.append(index % size)
        index //= size
    return digits[::-1]
