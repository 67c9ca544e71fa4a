"""What reverting a layer to float costs on this CPU: its multiply-accumulates times the time
int8 saved on each, ``MACs x (1 - 1 / ratio)`` in fp32-MAC units, where ``ratio`` is the
integer/float GEMM throughput the preflight measured here (u8 x s8 or s8 x s8, whichever the
activations use). On a CPU where int8 runs at fp32 speed (ratio <= 1) every revert is free;
on a VNNI CPU (ratio ~4) an FFN layer costs four times an attention output projection.
The accuracy-aware mode reverts layers in order of recovered metric per unit of this cost."""

from __future__ import annotations

from typing import Any

import numpy as np

TOKENS_DEFAULT = 128  # rows of a MatMul whose activation shape is not known statically


def layer_macs(proto: Any, names: list[str]) -> dict[str, float]:
    """Multiply-accumulates per example of each named MatMul/Gemm/Attention/Conv node, from its
    constant weight (and, for Conv, the output's spatial size when the graph records it)."""
    inits = {init.name: tuple(init.dims) for init in proto.graph.initializer}
    spatial = _spatial_sizes(proto)
    macs = {}
    for node in proto.graph.node:
        if node.name not in names or len(node.input) < 2 or node.input[1] not in inits:
            continue
        weight = float(np.prod(inits[node.input[1]]))
        rows = spatial.get(node.output[0], 1) if node.op_type == "Conv" else TOKENS_DEFAULT
        macs[node.name] = weight * rows
    return macs


def revert_costs(macs: dict[str, float], ratio: float) -> dict[str, float]:
    """Relative time lost by reverting each layer: ``MACs x max(0, 1 - 1 / ratio)``, scaled so
    the largest is 1 (all 0 when int8 does not pay here).

    Example:
        >>> revert_costs({"ffn": 4.0, "out": 1.0}, ratio=4.0)
        {'ffn': 1.0, 'out': 0.25}
        >>> revert_costs({"ffn": 4.0, "out": 1.0}, ratio=1.0)
        {'ffn': 0.0, 'out': 0.0}
    """
    gain = max(0.0, 1.0 - 1.0 / ratio) if ratio > 0 else 0.0
    raw = {name: m * gain for name, m in macs.items()}
    top = max(raw.values(), default=0.0)
    return {name: (v / top if top > 0 else 0.0) for name, v in raw.items()}


def by_benefit_per_cost(recovered: dict[str, float], costs: dict[str, float],
                        floor: float = 0.02) -> list[str]:
    """Layers ordered by metric recovered per unit of lost time (free layers first, by what
    they recover); ``floor`` keeps a tiny layer from looking infinitely efficient.

    Example:
        >>> by_benefit_per_cost({"ffn": 0.004, "out": 0.002}, {"ffn": 1.0, "out": 0.25})
        ['out', 'ffn']
    """
    def key(name: str) -> tuple[float, float]:
        return (-recovered[name] / max(costs.get(name, 1.0), floor), -recovered[name])
    return sorted(recovered, key=key)


def _spatial_sizes(proto: Any) -> dict[str, int]:
    sizes = {}
    for value in list(proto.graph.value_info) + list(proto.graph.output):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if len(dims) == 4 and all(d > 0 for d in dims[2:]):
            sizes[value.name] = dims[2] * dims[3]
    return sizes
