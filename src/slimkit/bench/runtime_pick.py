"""Pick the runtime for a model by measurement, not by default: every available runtime of
``runtimes`` is timed side by side in one ``slimkit.bench`` run (interleaved rounds, pinned
threads) and the fastest is returned with every measurement and what was skipped (a runtime not
installed, such as OpenVINO without ``slimkit[openvino]``, is listed with the install hint)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slimkit.model import Model

OPTIONAL = {"openvino": "pip install 'slimkit[openvino]'"}


@dataclass
class RuntimePick:
    runtime: str
    p50_ms: dict[str, float]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        best = self.p50_ms[self.runtime]
        return {"runtime": self.runtime, "p50_ms": self.p50_ms, "skipped": self.skipped,
                "speed_vs": {r: round(ms / best, 3) for r, ms in self.p50_ms.items()}}


def pick_runtime(model: Model, runtimes: tuple[str, ...] = ("onnxruntime", "openvino"),
                 threads: int = 1, batch: int = 1, rounds: int = 5) -> RuntimePick:
    """The fastest of ``runtimes`` for ``model`` on this machine, measured side by side.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> pick_runtime(tiny_model(), ("torch", "onnxruntime"), rounds=2).runtime in (
        ...     "torch", "onnxruntime")
        True
    """
    from slimkit._deps import is_available
    from slimkit.bench import BenchConfig, benchmark
    from slimkit.errors import InputError
    from slimkit.runtime import runtime_names

    known = set(runtime_names())
    unknown = [r for r in runtimes if r not in known]
    if unknown:
        raise InputError(f"unknown runtime(s) {unknown}; known: {sorted(known)}")
    skipped = [{"runtime": r, "why": f"not installed: {OPTIONAL[r]}"} for r in runtimes
               if r in OPTIONAL and not is_available(r)]
    usable = tuple(r for r in runtimes if r not in {s["runtime"] for s in skipped})
    if not usable:
        raise InputError(f"none of the runtimes {list(runtimes)} is installed here")
    result = benchmark([model], BenchConfig(runtimes=usable, threads=(threads,),
                                            batches=(batch,), rounds=rounds))
    p50 = {row.runtime: row.p50_ms for row in result.rows}
    skipped += [{"runtime": s.get("runtime", "?"), "why": s.get("reason", str(s))}
                for s in result.skipped]
    return RuntimePick(min(p50, key=p50.__getitem__), p50, skipped)
