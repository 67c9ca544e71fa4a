"""Structured pruning of all-MiniLM-L6-v2: a third of the attention heads (12 -> 8 per layer)
and half of the FFN neurons (1536 -> 768) removed, with no recovery training.

Measured:
    speed      ONNX Runtime (and torch with --torch) latency of the original and the pruned
               model, batch 1 x 128 tokens, 1 thread, in ONE ``slimkit.bench.core.benchmark`` call
               (interleaved rounds, medians); every pruned variant has the same shapes, so one
               of them is timed
    size       parameters and MACs (128 tokens) before and after
    fidelity   per importance criterion (l1, l2, random; taylor and activation read 64 other
               sentences), and activation with bias compensation (--compensate): mean and
               min cosine of the sentence embeddings to the original's and top-5
               neighbour agreement, on generated English sentences (those of
               bench_quantize.py); the distillation issue recovers what is lost

Usage:
    python benchmarks/bench_prune_minilm.py            # ~3-5 min on the 2-core machine
    python benchmarks/bench_prune_minilm.py --quick    # smoke run (indicative numbers only)

Writes ``benchmarks/results/prune_minilm.json`` (``prune_minilm-quick.json`` with --quick)
atomically and prints a Markdown table. Timings taken while other processes load the CPU are
flagged in ``warnings`` (``other_cpu_cores`` of each row).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
from common import git_state, sentences  # noqa: E402  (the generated sentences)

HEAD_RATIO, FFN_RATIO = 1 / 3, 0.5
VARIANTS = {  # name: (importance, bias compensation)
    "l1": ("l1", False), "l2": ("l2", False), "taylor": ("taylor", False),
    "activation": ("activation", False), "random": ("random", False),
    "activation+compensate": ("activation", True),
}
DATA_DRIVEN = ("taylor", "activation")


def log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


def text_data(lines: list[str], model: Any, tmp: Path, name: str) -> Any:
    import slimkit

    path = tmp / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return slimkit.load_data(str(path), model)


def prune_all(model: Any, calib: Any, started: float) -> dict[str, Any]:
    """Every variant's pruned model (no recovery training): ``plan_pruning`` + ``apply_plan``
    (``prune()`` would also measure sizes, once is enough: see ``main``)."""
    import copy
    import dataclasses

    from slimkit.prune import PruneConfig, apply_plan, plan_pruning

    results = {}
    for name, (criterion, compensate) in VARIANTS.items():
        config = PruneConfig(head_ratio=HEAD_RATIO, ffn_ratio=FFN_RATIO, importance=criterion,
                             compensate=compensate, taylor_batches=4, batch_size=16)
        data = calib if criterion in DATA_DRIVEN or compensate else None
        t0 = time.perf_counter()
        plan = plan_pruning(model, config, data)
        module = apply_plan(copy.deepcopy(model.module), plan).eval()
        results[name] = (dataclasses.replace(model, module=module, name=f"minilm-{name}"), plan)
        log(started, f"pruned with {name} in {time.perf_counter() - t0:.1f} s")
    return results


def fidelity(model: Any, pruned: dict[str, Any], data: Any) -> dict[str, Any]:
    from slimkit.evaluate.metrics import embedding_fidelity, predict

    reference = predict(model, data, "torch", batch_size=32)
    return {name: {k: round(v, 4) for k, v in embedding_fidelity(
        reference, predict(pruned_model, data, "torch", batch_size=32), k=5).items()}
        for name, (pruned_model, _) in pruned.items()}


def speed(model: Any, pruned: Any, quick: bool, with_torch: bool) -> dict[str, Any]:
    import dataclasses

    from slimkit.bench.core import BenchConfig, benchmark

    config = BenchConfig(runtimes=("onnxruntime", "torch") if with_torch else ("onnxruntime",),
                         threads=(1,), batches=(1,), sequence=128, warmup=3,
                         rounds=3 if quick else 9, round_seconds=0.3 if quick else 1.0)
    result = benchmark([model, dataclasses.replace(pruned, name="minilm-pruned")], config)
    rows = [asdict(row) for row in result.rows]
    ratios = {}
    for runtime in config.runtimes:
        mine = {r["model"]: r for r in rows if r["runtime"] == runtime}
        ratios[runtime] = round(mine["minilm"]["p50_ms"] / mine["minilm-pruned"]["p50_ms"], 3)
    return {"rows": rows, "speedup_p50": ratios, "warnings": result.warnings,
            "config": asdict(config)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sentences and rounds")
    parser.add_argument("--torch", action="store_true", help="also time the torch runtime")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import torch

    import slimkit
    from slimkit.analyse.stats import size_comparison
    from slimkit.bench.environment import environment
    from slimkit.io import write_text_atomic

    torch.set_num_threads(1)
    model = slimkit.load_model("builtin:minilm")
    with tempfile.TemporaryDirectory(prefix="bench-prune-") as folder:
        tmp = Path(folder)
        evaluation = text_data(sentences(60 if args.quick else 200, seed=1), model, tmp, "eval")
        calib = text_data(sentences(32 if args.quick else 64, seed=2), model, tmp, "calib")
        pruned = prune_all(model, calib, started)
        fid = fidelity(model, pruned, evaluation)
        log(started, "fidelity measured")
        timed = speed(model, pruned["activation+compensate"][0], args.quick, args.torch)
        log(started, "speed measured")
        size = size_comparison(model, pruned["activation+compensate"][0])
    summary = pruned["activation"][1].extra["transformer"]
    document = {
        "benchmark": "prune_minilm", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_prune_minilm.py",
                               *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "git": git_state(), "environment": environment(),
        "target": {"head_ratio": HEAD_RATIO, "ffn_ratio": FFN_RATIO, "recovery": "none"},
        "structure": {"heads_per_layer": [(h["heads"], h["kept_heads"])
                                          for h in summary["heads"]],
                      "ffn_per_layer": [(f["neurons"], f["kept"]) for f in summary["ffn"]]},
        "size": size,
        "sentences": {"eval": len(evaluation), "calib_for_taylor": len(calib),
                      "padded_tokens": int(evaluation.inputs["input_ids"].shape[1])},
        "fidelity": fid, "latency": timed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = HERE / "results" / ("prune_minilm-quick.json" if args.quick else "prune_minilm.json")
    write_text_atomic(out, json.dumps(document, indent=1, default=str) + "\n")
    print(table(document))
    print(f"\nwritten: {out}")
    return 0


def table(doc: dict[str, Any]) -> str:
    size = doc["size"]
    lines = [f"MiniLM, heads {doc['structure']['heads_per_layer'][0]}, FFN "
             f"{doc['structure']['ffn_per_layer'][0]} per layer; parameters "
             f"{size['parameters_before']:,} -> {size['parameters_after']:,}, MACs "
             f"{size['macs_before'] / 1e6:.0f}M -> {size['macs_after'] / 1e6:.0f}M",
             "", "| runtime | original p50 ms | pruned p50 ms | speed-up |", "|---|---|---|---|"]
    for runtime, ratio in doc["latency"]["speedup_p50"].items():
        rows = {r["model"]: r for r in doc["latency"]["rows"] if r["runtime"] == runtime}
        lines.append(f"| {runtime} | {rows['minilm']['p50_ms']:.1f} | "
                     f"{rows['minilm-pruned']['p50_ms']:.1f} | {ratio:.2f}x |")
    lines += ["", "| importance | mean cosine | min cosine | top-5 neighbours |",
              "|---|---|---|---|"]
    for name, fid in doc["fidelity"].items():
        lines.append(f"| {name} | {fid['cosine_mean']:.3f} | {fid['cosine_min']:.3f} | "
                     f"{fid.get('top5_neighbour_agreement', float('nan')):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
