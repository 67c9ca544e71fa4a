"""``slimkit analyze``: where a model's parameters, MACs and measured time go.

Time by operator type comes from ONNX Runtime's own profiler (per-node kernel times), so it
shows what the deployed graph (after ORT's fusions) spends, not what the torch code looks like.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimkit.analyse.stats import ModelStats, model_stats
from slimkit.data import synthetic
from slimkit.model import Model


@dataclass
class Analysis:
    model: dict[str, Any]
    stats: ModelStats
    latency_by_op: dict[str, float]  # op type -> share of kernel time (0..1)
    kernel_ms_per_run: float
    threads: int

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "model": self.model,
            "parameters": s.parameters,
            "nonzero_parameters": s.nonzero_parameters,
            "macs": s.macs,
            "size_bytes": s.size_bytes,
            "compressed_bytes": s.compressed_bytes,
            "params_by_type": s.params_by_type,
            "macs_by_type": s.macs_by_type(),
            "top_layers": [vars(layer) for layer in s.top_layers(10)],
            "latency_by_op": self.latency_by_op,
            "kernel_ms_per_run": self.kernel_ms_per_run,
            "threads": self.threads,
            "input_shapes": s.input_shapes,
        }


def analyze(model: Model, batch: int = 1, sequence: int = 128, threads: int = 1,
            runs: int = 10) -> Analysis:
    """Profile ``model``: statistics by layer type and ONNX Runtime time by operator type.

    Example:
        >>> from slimkit import load_model
        >>> a = analyze(load_model("builtin:digits-mlp"), runs=2)
        >>> max(a.latency_by_op, key=a.latency_by_op.get) in ("Gemm", "MatMul", "FusedGemm")
        True
    """
    stats = model_stats(model, batch=batch, sequence=sequence)
    shares, per_run = profile_ops(model, batch, sequence, threads, runs)
    return Analysis(model.describe(), stats, shares, per_run, threads)


def profile_ops(model: Model, batch: int, sequence: int, threads: int,
                runs: int) -> tuple[dict[str, float], float]:
    """Share of ONNX Runtime kernel time per op type, and kernel milliseconds per run."""
    from slimkit._deps import require
    from slimkit.export.onnx import export_onnx
    from slimkit.runtime.base import RuntimeOptions
    from slimkit.runtime.onnxrt import session_options

    ort = require("onnxruntime", "profiling")
    sample = synthetic(model.inputs, batch, seed=0, dynamic=sequence).first_batch(batch)
    with tempfile.TemporaryDirectory(prefix="slimkit-profile-") as tmp:
        path = model.onnx_path or export_onnx(model, Path(tmp) / "model.onnx").path
        opts = session_options(RuntimeOptions(threads=threads))
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        session.run(None, sample)  # warm-up run, excluded below
        for _ in range(runs):
            session.run(None, sample)
        events = json.loads(Path(session.end_profiling()).read_text())
    return _kernel_shares(events, runs)


def _kernel_shares(events: list[dict[str, Any]], runs: int) -> tuple[dict[str, float], float]:
    node_events = [e for e in events if e.get("cat") == "Node"
                   and str(e.get("name", "")).endswith("_kernel_time")]
    # the first run is the warm-up: drop the earliest 1/(runs+1) of kernel events
    node_events.sort(key=lambda e: e["ts"])
    node_events = node_events[len(node_events) // (runs + 1):]
    totals: dict[str, float] = {}
    for event in node_events:
        op = event.get("args", {}).get("op_name", "?")
        totals[op] = totals.get(op, 0.0) + float(event["dur"])
    all_us = sum(totals.values()) or 1.0
    shares = {op: us / all_us for op, us in sorted(totals.items(), key=lambda kv: -kv[1])}
    return shares, all_us / 1e3 / max(runs, 1)
