"""Coverage benchmark (issue 15): the models users bring, each through slimkit's export,
dynamic int8, static int8 and structured pruning, beside plain ``torch.onnx.export`` + ONNX
Runtime and Torch-Pruning's generic pruner on the same models.

The corpus is ``slimkit.testing.corpus``: Hugging Face models built from transformers' own
config classes (random init, tiny; written as folders and loaded like a user's) and plain-torch
graphs (``slimkit.testing.graphs``). Per model and tool:

    export          slimkit: export_onnx (verified in ONNX Runtime at another batch and length)
                    plain:   torch.onnx.export (TorchScript, opset 17, the same dynamic axes)
                             then ONNX Runtime at another batch/length, compared with torch
    dynamic_int8    slimkit.quantize mode dynamic (verified, integer kernels proven)
    static_int8     slimkit.quantize mode static, 16 synthetic calibration examples
    prune           slimkit.prune at ratio 0.5 (defaults): >= 10% fewer parameters, same output
                    shapes, exported and verified
    torch_pruning   Torch-Pruning 1.6 MagnitudePruner (L1, ratio 0.5, round_to 8) out of the
                    box: the layer writing the output ignored, no per-model head settings; same
                    success rule as prune

A failure records one line; ``clear`` says whether slimkit raised it as a SlimkitError (a
message for the user) or an internal exception leaked (a bug). Speed is not measured here.

Usage:
    python benchmarks/bench_coverage.py            # every model (results/coverage.json)
    python benchmarks/bench_coverage.py --quick    # the fast subset (coverage-quick.json)
    python benchmarks/bench_coverage.py --models llama swin lstm
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent

from common import CpuMeter, cpu_detail, git_state, log, write_json  # noqa: E402

from slimkit.data import synthetic  # noqa: E402
from slimkit.errors import SlimkitError  # noqa: E402
from slimkit.export.onnx import export_onnx  # noqa: E402
from slimkit.model import Model  # noqa: E402
from slimkit.prune import PruneConfig, prune  # noqa: E402
from slimkit.quantize import QuantizeConfig, quantize  # noqa: E402
from slimkit.testing.corpus import FAST_HF, HF_MODELS, corpus_model, corpus_names  # noqa: E402
from slimkit.testing.graphs import FAST_GRAPHS  # noqa: E402

MIN_REDUCTION = 0.10
RATIO = 0.5
TOOL_SECONDS = 60  # a tool that takes longer on a tiny model has failed (Torch-Pruning's
# dependency search does not finish on some HF decoders)
TOOLS = ("export", "plain_export", "dynamic_int8", "static_int8", "prune", "torch_pruning")


def parameters(model: Model) -> int:
    return sum(p.numel() for p in model.require_module("count").parameters())


def batch(model: Model, count: int, seed: int, length: int) -> dict[str, np.ndarray]:
    return synthetic(model.inputs, count, seed=seed, dynamic=length).first_batch(count)


def shapes(module: torch.nn.Module, model: Model, data: dict[str, np.ndarray]) -> list[tuple]:
    with torch.no_grad():
        out = module.eval()(*model.torch_args(data))
    items = out if isinstance(out, (tuple, list)) else (out,)
    return [tuple(t.shape) for t in items if isinstance(t, torch.Tensor)]


# ---- the tools ---------------------------------------------------------------------------

def slimkit_export(model: Model, tmp: Path) -> dict[str, Any]:
    result = export_onnx(model, tmp / "export.onnx")
    return {"max_abs_diff": result.max_abs_diff, "opset": result.opset}


def plain_export(model: Model, tmp: Path) -> dict[str, Any]:
    """What a user gets from torch.onnx.export and ONNX Runtime alone."""
    import onnxruntime as ort

    module = model.require_module("export").eval()
    path = tmp / "plain.onnx"
    axes = {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)}
            for s in model.inputs}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, model.torch_args(batch(model, 2, 0, 16)), str(path),
                          dynamo=False, opset_version=17, input_names=list(model.input_names),
                          output_names=list(model.output_names), dynamic_axes=axes)
    data = batch(model, 3, 1, 24)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, data)
    with torch.no_grad():
        want = module(*model.torch_args(data))
    want = want if isinstance(want, (tuple, list)) else (want,)
    diff = max(float(np.max(np.abs(w.numpy() - g))) for w, g in zip(want, got, strict=True))
    if not all(np.allclose(g, w.numpy(), atol=1e-4, rtol=1e-3) for w, g in zip(want, got,
                                                                               strict=True)):
        raise AssertionError(f"ONNX Runtime differs from torch by {diff:.3g}")
    return {"max_abs_diff": diff}


def quantized(mode: str) -> Callable[[Model, Path], dict[str, Any]]:
    def run(model: Model, tmp: Path) -> dict[str, Any]:
        calib = synthetic(model.inputs, 16, seed=2, dynamic=16) if mode == "static" else None
        result = quantize(model, tmp / f"{mode}.onnx", QuantizeConfig(mode=mode), calib=calib,
                          measure=False)
        fidelity = result.sections["metric"].get("fidelity", {})
        return {"integer_kernels": result.sections["proof"]["ok"],
                "sqnr_db": _finite(fidelity.get("sqnr_db"))}

    return run


def _finite(value: Any) -> float | None:
    return round(float(value), 2) if value is not None and np.isfinite(value) else None


def slimkit_prune(model: Model, tmp: Path) -> dict[str, Any]:
    result = prune(model, PruneConfig(ratio=RATIO))
    return _checked(model, result.model.require_module("pruned"), tmp, "slimkit",
                    planner=result.plan.extra.get("planner", "transformer blocks / fx"),
                    left_whole=sum(1 for g in result.plan.groups
                                   if (g.note or "").find("left whole") >= 0))


def torch_pruning(model: Model, tmp: Path) -> dict[str, Any]:
    """Torch-Pruning's MagnitudePruner as its README shows it; the layer that writes the
    model's output is ignored (found by its width), nothing else is configured."""
    import torch_pruning as tp

    module = copy.deepcopy(model.require_module("torch-pruning")).eval()
    example = model.torch_args(batch(model, 1, 0, 16))
    with torch.no_grad():
        out = module(*example)
    out = out[0] if isinstance(out, (tuple, list)) else out
    widths = {out.shape[-1], out.shape[1] if out.dim() > 1 else -1}
    ignored = [m for m in module.modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv1d))
               and getattr(m, "out_channels", getattr(m, "out_features", None)) in widths]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(
            module, example, importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=RATIO, ignored_layers=ignored, round_to=8)
        pruner.step()
    return _checked(model, module, tmp, "torch-pruning")


def _checked(model: Model, pruned: torch.nn.Module, tmp: Path, tool: str,
             **extra: Any) -> dict[str, Any]:
    data = batch(model, 2, 3, 16)
    before, after = parameters(model), sum(p.numel() for p in pruned.parameters())
    if shapes(pruned, model, data) != shapes(model.require_module("x"), model, data):
        raise AssertionError("the pruned model's outputs change shape")
    reduction = 1 - after / before
    if reduction < MIN_REDUCTION:
        raise AssertionError(f"only {reduction:.1%} fewer parameters")
    exported = export_onnx(replace(model, module=pruned, name=f"{model.name}-{tool}"),
                           tmp / f"{tool}.onnx")
    return {"reduction": round(reduction, 4), "max_abs_diff": exported.max_abs_diff, **extra}


RUNNERS: dict[str, Callable[[Model, Path], dict[str, Any]]] = {
    "export": slimkit_export, "plain_export": plain_export,
    "dynamic_int8": quantized("dynamic"), "static_int8": quantized("static"),
    "prune": slimkit_prune, "torch_pruning": torch_pruning,
}


class ToolTimeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise ToolTimeout(f"did not finish within {TOOL_SECONDS} s")


def run_tool(tool: str, model: Model, tmp: Path) -> dict[str, Any]:
    import signal

    start = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TOOL_SECONDS)
    try:
        row = {"ok": True, **RUNNERS[tool](model, tmp)}
    except Exception as exc:  # the point: record who fails where, and how it says so
        first = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else ""
        row = {"ok": False, "error": f"{type(exc).__name__}: {first}",
               "clear": isinstance(exc, SlimkitError)}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def model_row(name: str, folder: Path) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        model = corpus_model(name, folder / name)
    except Exception as exc:  # noqa: BLE001 - a model that does not load is a result too
        return {"model": name, "load": {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                        "clear": isinstance(exc, SlimkitError)}}
    row: dict[str, Any] = {
        "model": name, "kind": "huggingface" if name in HF_MODELS else "torch",
        "architecture": model.meta.get("architecture", type(model.module).__name__),
        "inputs": [s.to_dict() for s in model.inputs], "outputs": list(model.output_names),
        "task": model.task.value, "parameters": parameters(model),
        "load_seconds": round(time.perf_counter() - start, 2)}
    for tool in TOOLS:
        with tempfile.TemporaryDirectory(prefix=f"cov-{name}-") as tmp:
            row[tool] = run_tool(tool, model, Path(tmp))
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total = len(rows)
    counts = {tool: sum(1 for r in rows if r.get(tool, {}).get("ok")) for tool in TOOLS}
    unclear = [f"{r['model']}/{tool}" for r in rows for tool in ("export", "dynamic_int8",
                                                                   "static_int8", "prune")
               if tool in r and not r[tool]["ok"] and not r[tool].get("clear")]
    return {"models": total, **{f"{k}_ok": v for k, v in counts.items()},
            "slimkit_failures_without_a_clear_line": unclear}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per model, one column per tool (reduction for the pruners)."""
    def cell(result: dict[str, Any] | None) -> str:
        if not result:
            return "-"
        if not result["ok"]:
            return "fail"
        return f"ok ({result['reduction']:.0%})" if "reduction" in result else "ok"

    head = ("| model | inputs -> outputs | slimkit export | torch.onnx.export | dynamic int8 | "
            "static int8 | slimkit prune | Torch-Pruning |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        names = ", ".join(i["name"] for i in r.get("inputs", []))
        lines.append(f"| {r['model']} | {names} -> {', '.join(r.get('outputs', []))} | "
                     + " | ".join(cell(r.get(t)) for t in TOOLS) + " |")
    s = summary(rows)
    lines.append(f"| **{s['models']} models** | | {s['export_ok']} | {s['plain_export_ok']} | "
                 f"{s['dynamic_int8_ok']} | {s['static_int8_ok']} | {s['prune_ok']} | "
                 f"{s['torch_pruning_ok']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the fast subset only")
    parser.add_argument("--models", nargs="*", help="these corpus models only")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    names = args.models or ([*FAST_HF, *FAST_GRAPHS] if args.quick else corpus_names())
    torch.set_num_threads(args.threads)
    started, meter = time.perf_counter(), CpuMeter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="slimkit-coverage-") as folder:
        for name in names:
            rows.append(model_row(name, Path(folder)))
            ok = [t for t in TOOLS if rows[-1].get(t, {}).get("ok")]
            log(started, f"{name}: {len(ok)}/{len(TOOLS)} ({', '.join(ok)})")
    payload = {
        "benchmark": "coverage", "date": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick, "threads": args.threads, "cpu": platform.processor(),
        "cpu_detail": cpu_detail(), "load": meter.cores(), "git": git_state(),
        "versions": {"torch": torch.__version__, "transformers": _version("transformers"),
                     "onnxruntime": _version("onnxruntime"),
                     "torch_pruning": _version("torch_pruning")},
        "summary": summary(rows), "table": table(rows), "rows": rows,
    }
    out = HERE / "results" / ("coverage-quick.json" if args.quick else "coverage.json")
    if args.models:
        out = out.with_name("coverage-selected.json")
    write_json(out, payload)
    print(table(rows))
    print(f"\nwrote {out}", file=sys.stderr)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
