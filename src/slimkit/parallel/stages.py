"""Pipeline split: a model's top-level children as a chain of units (``torch.fx``), stages
balanced by measured cost, one module per stage (``torch.fx``'s ``split_module``).

torch is imported inside the functions: a stage process imports this module before it pins
its thread counts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slimkit.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class StagePlan:
    """The chain of units (top-level children), their measured cost and where stages begin."""

    units: tuple[str, ...]
    boundaries: tuple[int, ...]  # index of the first unit of stages 1..n-1
    unit_ms: tuple[float, ...] = ()

    @property
    def stages(self) -> list[tuple[str, ...]]:
        cuts = (0, *self.boundaries, len(self.units))
        return [self.units[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]

    @property
    def stage_ms(self) -> list[float]:
        cuts = (0, *self.boundaries, len(self.units))
        return [round(sum(self.unit_ms[a:b]), 4) for a, b in zip(cuts, cuts[1:], strict=False)]


def chain_units(module: torch.nn.Module) -> tuple[Any, list[list[str]]]:
    """The fx graph of ``module`` with its top-level children as leaves, and its chain units
    (node names per unit). Raises InputError when the children do not run as a chain.

    Example:
        >>> import torch
        >>> seq = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
        >>> chain_units(seq)[1]
        [['_0'], ['_1']]
    """
    import torch.fx as fx

    children = {id(c) for c in module.children()}

    class TopLevel(fx.Tracer):
        def is_leaf_module(self, m: torch.nn.Module, name: str) -> bool:
            return id(m) in children or super().is_leaf_module(m, name)

    name = type(module).__name__
    try:
        gm = fx.GraphModule(module, TopLevel().trace(module))
    except Exception as exc:
        raise InputError(f"model {name} cannot be traced by torch.fx to find its stages "
                         f"({type(exc).__name__}: {str(exc)[:160]}); pipeline parallelism "
                         "needs a forward pass without data-dependent control flow") from None
    nodes = list(gm.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise InputError(f"pipeline parallelism takes models with one input; {name} has "
                         f"{[n.name for n in inputs]}")
    units: list[list[str]] = []
    previous = inputs[0]
    for node in nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.all_input_nodes != [previous]:
            raise InputError(
                f"model {name} cannot be split into pipeline stages: its top-level children do "
                f"not run as a chain ('{node.name}' takes {[n.name for n in node.all_input_nodes]}"
                f", not just '{previous.name}'); wrap the branching part in one child module")
        if node.op == "call_module" or not units:
            units.append([node.name])
        else:
            units[-1].append(node.name)  # a function (flatten, relu) joins the unit before it
        previous = node
    if not units:
        raise InputError(f"model {name} has no layers to split into stages")
    return gm, units


def check_boundaries(boundaries: Sequence[int], units: Sequence[str], stages: int) -> tuple[
        int, ...]:
    """``boundaries`` if they cut ``units`` into ``stages`` non-empty parts, else InputError."""
    cuts = tuple(int(b) for b in boundaries)
    if len(cuts) != stages - 1 or list(cuts) != sorted(set(cuts)) or \
            (cuts and (cuts[0] < 1 or cuts[-1] >= len(units))):
        raise InputError(
            f"stage split {list(cuts)} does not match the model: {stages} stages need "
            f"{stages - 1} increasing boundaries in 1..{len(units) - 1} (the index of each "
            f"stage's first unit) over its {len(units)} units {list(units)}")
    return cuts


def balance(costs: Sequence[float], stages: int) -> tuple[int, ...]:
    """Boundaries cutting ``costs`` into ``stages`` contiguous parts with the smallest maximum.

    Example:
        >>> balance([1, 1, 1, 3], 2)
        (3,)
    """
    n = len(costs)
    if not 1 <= stages <= n:
        raise InputError(f"{stages} stages cannot be made from {n} units (one unit per stage "
                         "at least)")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]  # best[k][j]: first j units, k stages
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                value = max(best[k - 1][i], prefix[j] - prefix[i])
                if value < best[k][j]:
                    best[k][j], cut[k][j] = value, i
    bounds, j = [], n
    for k in range(stages, 1, -1):
        j = cut[k][j]
        bounds.append(j)
    return tuple(reversed(bounds))


def build_stages(module: torch.nn.Module, boundaries: Sequence[int]) -> list[torch.nn.Module]:
    """One module per stage (``torch.fx`` ``split_module``), sharing ``module``'s weights."""
    from torch.fx.passes.split_module import split_module

    gm, units = chain_units(module)
    check_boundaries(boundaries, ["/".join(u) for u in units], len(boundaries) + 1)
    stage_of = {}
    for index, unit in enumerate(units):
        stage = sum(index >= b for b in boundaries)
        stage_of.update(dict.fromkeys(unit, stage))
    split = split_module(gm, module, lambda node: stage_of[node.name])
    return [getattr(split, f"submod_{i}").eval() for i in range(len(boundaries) + 1)]


def plan(module: torch.nn.Module, sample: np.ndarray, stages: int, threads: int = 1,
         boundaries: Sequence[int] | None = None) -> StagePlan:
    """Time each unit on ``sample`` (one micro-batch) and balance the stages on those costs;
    with ``boundaries`` given, check them and only measure."""
    import numpy as np
    import torch

    _, units = chain_units(module)
    names = tuple(u[0] for u in units)
    per_unit = build_stages(module, tuple(range(1, len(units))))
    times = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            x = torch.from_numpy(sample)
            for unit in per_unit:
                runs = []
                for i in range(4):
                    start = time.perf_counter()
                    y = unit(x)
                    if i:  # the first run warms up
                        runs.append(time.perf_counter() - start)
                times.append(float(np.median(runs)) * 1e3)
                x = y
    finally:
        torch.set_num_threads(before)
    cuts = check_boundaries(boundaries, names, stages) if boundaries is not None \
        else balance(times, stages)
    return StagePlan(names, cuts, tuple(round(t, 4) for t in times))
