"""Pruning benchmark: slimkit's structured pruner side by side with Torch-Pruning (the same
models, the same ratio and rounding, L1 magnitude importance), and the accuracy targets.

Sections of the result:

    architectures   every tiny CNN of slimkit.testing.cnns plus digits-cnn, resnet18-cifar,
                    mobilenetv2 (224) and resnet18 (224): 50% of the channels removed by each
                    tool; does it prune, run, keep the output shape, export to ONNX and verify
                    (max abs diff vs torch); parameters and MACs after
    latency         ONNX Runtime latency (1 thread, batch 1) of the unpruned model, slimkit's
                    and Torch-Pruning's pruned models, in ONE slimkit.bench.core call per model
                    (interleaved rounds, medians); for resnet18 also slimkit-pruned + static
                    int8 (u8 activations, s8 per-channel weights)
    accuracy        digits-cnn (the zoo's trained model) and resnet18-cifar trained here on
                    digits upsampled to 3x32x32 (fixed seed; cached): test accuracy before,
                    after pruning 50% of the channels, and after fine-tuning (target: within
                    0.5 points of the original)

Targets (issue 4): resnet18 224 pruned 50% >= 3.3x lower ORT latency than unpruned; pruned +
int8 >= 5x (needs int8 kernels that pay off: on a CPU without VNNI-class int8 throughput it
cannot, see ANCHORS.md); digits-cnn and resnet18-cifar within 0.5 points after fine-tuning.

Usage:
    python benchmarks/bench_prune.py            # full run (writes results/prune.json)
    python benchmarks/bench_prune.py --quick    # smoke run (results/prune-quick.json)
    python benchmarks/bench_prune.py --sections accuracy
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent

from common import CpuMeter, cpu_detail, digits_as, trained_resnet18_cifar, write_json  # noqa: E402

from slimkit import load_model  # noqa: E402
from slimkit.analyse.stats import model_stats  # noqa: E402
from slimkit.bench.core import BenchConfig, benchmark  # noqa: E402
from slimkit.data import synthetic  # noqa: E402
from slimkit.evaluate.torch_metric import metric  # noqa: E402
from slimkit.export.onnx import export_onnx  # noqa: E402
from slimkit.model import Model  # noqa: E402
from slimkit.prune import PruneConfig, prune  # noqa: E402
from slimkit.prune.iterative import prune_and_finetune  # noqa: E402
from slimkit.testing.cnns import CNN_NAMES, cnn_model  # noqa: E402
from slimkit.train.hooks import FinetuneConfig  # noqa: E402

SECTIONS = ("architectures", "latency", "accuracy")
RATIO = 0.5
TARGETS = {"resnet18_speedup": 3.3, "resnet18_int8_speedup": 5.0, "max_drop_points": 0.5}
ZOO = ("digits-cnn", "resnet18-cifar", "mobilenetv2", "resnet18")


def zoo_model(name: str) -> Model:
    return load_model(f"builtin:{name}")


def round_to(model: Model) -> int:
    return 4 if model.name.startswith("tiny-") else 8


# ---- the two pruners ---------------------------------------------------------------------

def slimkit_prune(model: Model) -> Model:
    return prune(model, PruneConfig(ratio=RATIO, round_to=round_to(model))).model


def torch_pruning_prune(model: Model) -> Model:
    """Torch-Pruning's MagnitudePruner (L1, per-layer ratio), the classifier ignored, as its
    README shows; the output convolution of a per-pixel model is ignored too."""
    import torch_pruning as tp

    module = copy.deepcopy(model.require_module("torch-pruning")).eval()
    example = torch.randn(1, *model.inputs[0].shape[1:])
    with torch.no_grad():
        out_channels = module(example).shape[1]
    ignored = [m for m in module.modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
               and getattr(m, "out_channels", getattr(m, "out_features", None)) == out_channels]
    pruner = tp.pruner.MagnitudePruner(module, example, importance=tp.importance
                                       .MagnitudeImportance(p=1), pruning_ratio=RATIO,
                                       ignored_layers=ignored, round_to=round_to(model))
    pruner.step()
    return replace(model, module=module.eval(), name=f"{model.name}-torch-pruning")


PRUNERS = {"slimkit": slimkit_prune, "torch-pruning": torch_pruning_prune}


def try_pruner(tool: str, model: Model, tmp: Path) -> tuple[dict[str, Any], Model | None]:
    """Prune with one tool; check it runs, keeps the output shape, exports and verifies."""
    row: dict[str, Any] = {"tool": tool}
    start = time.perf_counter()
    try:
        pruned = PRUNERS[tool](model)
        x = torch.randn(2, *model.inputs[0].shape[1:])
        with torch.no_grad():
            same = pruned.module.eval()(x).shape == model.module.eval()(x).shape
        stats = model_stats(pruned)
        exported = export_onnx(pruned, tmp / f"{tool}-{model.name}.onnx")
        row.update(ok=same, parameters=stats.parameters, macs=stats.macs,
                   onnx_max_abs_diff=float(exported.max_abs_diff),
                   seconds=round(time.perf_counter() - start, 2))
        return row, pruned
    except Exception as exc:  # the point is to record which tool fails where
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        traceback.print_exc()
        return row, None


def architectures(quick: bool, tmp: Path, keep: dict[str, dict[str, Model]],
                  only: list[str]) -> list[dict]:
    """Both pruners on every model; ``keep`` collects the zoo models' results for latency.
    Tiny CNNs are named ``tiny-NAME`` (``mobilenetv2`` alone is the zoo's 224x224 one)."""
    rows = []
    models = [(f"tiny-{n}", lambda n=n: cnn_model(n)) for n in CNN_NAMES]
    models += [(n, lambda n=n: zoo_model(n)) for n in (ZOO[:2] if quick else ZOO)]
    for label, build in [(label, b) for label, b in models if not only or label in only]:
        model = build()
        base = model_stats(model)
        for tool in PRUNERS:
            row, pruned = try_pruner(tool, model, tmp)
            row.update(model=label, parameters_before=base.parameters,
                       macs_before=base.macs)
            if "macs" in row:
                row["macs_ratio"] = round(row["macs"] / base.macs, 4)
            rows.append(row)
            if pruned is not None and label in ZOO:
                keep.setdefault(label, {"unpruned": model})[tool] = pruned
            print(f"  {label:24s} {tool:14s} ok={row['ok']} "
                  f"macs_ratio={row.get('macs_ratio')} {row.get('error', '')}", flush=True)
    return rows


# ---- latency -----------------------------------------------------------------------------

def latency(quick: bool, tmp: Path, keep: dict[str, dict[str, Model]]) -> list[dict]:
    config = BenchConfig(runtimes=("onnxruntime",), threads=(1,), batches=(1,),
                         rounds=3 if quick else 7, round_seconds=0.15 if quick else 0.6)
    rows = []
    for name, models in keep.items():
        order = ["unpruned", "slimkit", "torch-pruning"]
        cases = [replace(models[k], name=f"{name}:{k}") for k in order if k in models]
        if name == "resnet18" and "slimkit" in models:
            cases.append(int8(models["slimkit"], tmp))
        meter = CpuMeter()
        result = benchmark(cases, config)
        for row in result.rows:
            rows.append({"workload": name, "case": row.model, "p50_ms": round(row.p50_ms, 3),
                         "speedup_vs_unpruned": round(row.speedup, 3)})
            print(f"  {row.model:34s} p50 {row.p50_ms:8.2f} ms  x{row.speedup:.2f}", flush=True)
        rows.append({"workload": name, "contention": meter.cores()})
    return rows


def int8(model: Model, tmp: Path) -> Model:
    """The pruned model quantized to static int8 (u8 activations, s8 per-channel weights)."""
    from slimkit.quantize import QuantizeConfig, quantize

    calib = synthetic(model.inputs, 32, seed=0)
    result = quantize(model, tmp / "pruned-int8.onnx", QuantizeConfig(
        mode="static", activation_type="u8", calibration_size=32), calib=calib, measure=False)
    return replace(result.model, name="resnet18:slimkit+int8")


# ---- accuracy ----------------------------------------------------------------------------


def accuracy(quick: bool) -> list[dict]:
    rows = []
    cases = [("digits-cnn", "l1", 3 if quick else 8), ("digits-cnn", "taylor", 3 if quick else 8),
             ("resnet18-cifar", "l1", 1 if quick else 3)]
    for name, importance, epochs in cases:
        start = time.perf_counter()
        model = (zoo_model(name) if name == "digits-cnn"
                 else trained_resnet18_cifar(1 if quick else 4))
        train, test = digits_as(model, "train"), digits_as(model, "test")
        original = metric(model, test)
        config = PruneConfig(ratio=RATIO, importance=importance, round_to=8)
        result = prune_and_finetune(model, config, train, FinetuneConfig(
            epochs=epochs, lr=1e-3, batch_size=64), eval_data=test)
        step = result.sections["finetune"]["steps"][-1]
        row = {"model": name, "importance": importance, "finetune_epochs": epochs,
               "accuracy_original": round(original, 5),
               "accuracy_pruned": step["metric_pruned"],
               "accuracy_finetuned": step["metric_finetuned"],
               "macs_ratio": result.sections["size"]["macs_ratio"],
               "parameters_ratio": result.sections["size"]["parameters_ratio"],
               "seconds": round(time.perf_counter() - start, 1)}
        row["drop_points"] = round(100 * (row["accuracy_original"]
                                          - row["accuracy_finetuned"]), 3)
        row["meets_target"] = row["drop_points"] <= TARGETS["max_drop_points"]
        rows.append(row)
        print(f"  {row}", flush=True)
    return rows


def summary(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in result.get("latency", []):
        if row.get("workload") == "resnet18" and "case" in row:
            key = row["case"].split(":", 1)[1]
            out[f"resnet18_{key}_speedup"] = row["speedup_vs_unpruned"]
    arch = result.get("architectures", [])
    for tool in PRUNERS:
        out[f"{tool}_handles"] = sorted(r["model"] for r in arch if r["tool"] == tool and r["ok"])
    out["accuracy_targets_met"] = [r["meets_target"] for r in result.get("accuracy", [])]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer models, epochs and rounds")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads for pruning and training (timings always use 1)")
    p.add_argument("--models", default="",
                   help="only these models in architectures/latency (comma-separated: "
                        f"tiny-NAME for NAME in {CNN_NAMES}, or one of {ZOO})")
    args = p.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bench_prune.py", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpu": cpu_detail()},
        "quick": args.quick, "ratio": RATIO, "targets": TARGETS}
    keep: dict[str, dict[str, Model]] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if "architectures" in sections or "latency" in sections:
            print("architectures: slimkit vs Torch-Pruning at 50%", flush=True)
            result["architectures"] = architectures(args.quick, tmp, keep,
                                                    [m for m in args.models.split(",") if m])
        if "latency" in sections:
            print("latency (ORT, 1 thread, batch 1)", flush=True)
            result["latency"] = latency(args.quick, tmp, keep)
        if "accuracy" in sections:
            print("accuracy: 50% of channels + fine-tuning", flush=True)
            result["accuracy"] = accuracy(args.quick)
    result["summary"] = summary(result)
    name = "prune-quick" if args.quick else "prune"
    out = HERE / "results" / (f"{name}-partial.json" if args.models or len(sections) < 3
                              else f"{name}.json")
    write_json(out, result)
    print(f"summary: {result['summary']}\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
