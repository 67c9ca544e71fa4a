"""Deep Compression benchmark: ``slimkit.deep_compress`` on builtin:digits-mlp and
builtin:digits-cnn, against Deep Compression's published 40x on LeNet-300-100 (MNIST).

For each model: gradual magnitude pruning with fine-tuning -> k-means weight sharing with
centroid fine-tuning -> float16 storage of biases/norms/codebooks -> entropy-coded ``.slim``.
Reported per stage: test accuracy (builtin:digits:test, 360 examples: one example is 0.28
points) and the real size on disk of the ``.slim`` file written with Huffman only, with the
standard library's compressors only (zlib, lzma) and with the smallest per stream; the final
file's breakdown (safetensors header, manifest, weight streams, other tensors); the whole fp32
safetensors file compressed by zlib and lzma, for context; the loaded file checked to give
outputs identical to the in-memory compressed model. Issue 5's targets: the ``.slim`` file
>= 40x smaller than the fp32 safetensors file, test accuracy within 0.5 points.

The full run adds a clustering ablation on digits-mlp (init x clusters, from one pruned model).

Sizes do not depend on the machine's load; CPU seconds do (shared machine: indicative).

Usage:
    python benchmarks/bench_compact.py            # full run (a few minutes on 2 idle cores)
    python benchmarks/bench_compact.py --quick    # fewer epochs, no ablation

The JSON result is written atomically to ``benchmarks/results/compact.json``
(``compact-quick.json`` with ``--quick``); a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import lzma
import shlex
import sys
import time
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

from common import write_json  # noqa: E402

MODELS = ("digits-mlp", "digits-cnn")
# the recipe: DeepCompressConfig's defaults (global magnitude pruning, 16 linear-seeded clusters
# per layer, 10 epochs of centroid fine-tuning, float16 rest) at 95% sparsity, with 60 epochs of
# gradual pruning (30 cost LeNet-300-100 two test examples, 0.56 points; 60 cost none)
RECIPE: dict[str, Any] = {"sparsity": 0.95, "prune_epochs": 60}
QUICK: dict[str, Any] = {**RECIPE, "prune_epochs": 10, "cluster_epochs": 3}
TARGET_RATIO, TARGET_DROP_POINTS = 40.0, 0.5


def compress_model(name: str, quick: bool) -> dict[str, Any]:
    import slimkit
    from slimkit.compact import DeepCompressConfig, deep_compress
    from slimkit.graph.masks import weights_bytes

    model = slimkit.load_model(f"builtin:{name}")
    train = slimkit.load_data("builtin:digits:train", model)
    test = slimkit.load_data("builtin:digits:test", model)
    config = DeepCompressConfig(**(QUICK if quick else RECIPE))
    started = time.process_time()
    result = deep_compress(model, train, config, eval_data=test)
    cpu = time.process_time() - started
    report = result.to_dict()
    fp32 = weights_bytes(model.require_module("size"))
    final = weights_bytes(result.model.require_module("size"))
    file = report["file"]
    weight_rows = [t for t in file["tensors"] if t["tensor"].endswith(".weight")
                   and t["layout"] != "dense"]
    breakdown = {
        "safetensors_header_bytes": file["file_bytes"] - file["manifest_bytes"]
        - file["payload_bytes"],
        "manifest_bytes": file["manifest_bytes"],
        "clustered_weight_bytes": sum(t["bytes"] for t in weight_rows),
        "other_tensor_bytes": file["payload_bytes"] - sum(t["bytes"] for t in weight_rows),
    }
    return {
        "model": name, "config": report["config"], "cpu_seconds": round(cpu, 1),
        "stages": report["stages"], "clusters": report["clusters"],
        "final_codecs": report["codecs"], "file": file, "breakdown": breakdown,
        "whole_file_compressors": {
            "original_fp32_zlib9": len(zlib.compress(fp32, 9)),
            "original_fp32_lzma9e": len(lzma.compress(fp32, preset=9 | lzma.PRESET_EXTREME)),
            "final_weights_fp32_zlib9": len(zlib.compress(final, 9)),
            "final_weights_fp32_lzma9e": len(lzma.compress(final,
                                                           preset=9 | lzma.PRESET_EXTREME)),
        },
        "verify": report["verify"], "accuracy": report["accuracy"],
        "targets": {"ratio": file["ratio"], "ratio_met": file["ratio"] >= TARGET_RATIO,
                    "drop_points": report["accuracy"]["drop_points"],
                    "accuracy_met": report["accuracy"]["drop_points"] <= TARGET_DROP_POINTS},
    }


def ablation() -> list[dict[str, Any]]:
    """Cluster the same pruned digits-mlp with every init and 16/32 clusters (with centroid
    fine-tuning and float16 rest), measuring accuracy and real .slim size."""
    import slimkit
    from slimkit.cluster import ClusterConfig, cluster
    from slimkit.compact import DeepCompressConfig, stages

    model = slimkit.load_model("builtin:digits-mlp")
    train = slimkit.load_data("builtin:digits:train", model)
    test = slimkit.load_data("builtin:digits:test", model)
    base = DeepCompressConfig(**RECIPE)
    pruned, _ = stages.gradual_prune(model, train, sparsity=base.sparsity,
                                     epochs=base.prune_epochs, scope=base.prune_scope,
                                     exclude=(), lr=base.lr, batch_size=base.batch_size, seed=0)
    rows = [{"init": "-", "clusters": "-", "accuracy": stages.accuracy_of(pruned, test),
             "slim_bytes": stages.slim_bytes(pruned, base.codecs)["file_bytes"]}]
    for init in ("linear", "density", "kmeans++"):
        for clusters in (16, 32):
            config = ClusterConfig(clusters=clusters, init=init, epochs=base.cluster_epochs,
                                   lr=base.cluster_lr)
            final = stages.to_half_precision(cluster(pruned, config, train).model)
            rows.append({"init": init, "clusters": clusters,
                         "accuracy": stages.accuracy_of(final, test),
                         "slim_bytes": stages.slim_bytes(final, base.codecs)["file_bytes"]})
    return rows


def markdown(results: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    lines = ["| model | stage | test accuracy | .slim bytes (best) | Huffman only | "
             "zlib/lzma only | ratio vs fp32 |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for s in r["stages"]:
            lines.append(f"| {r['model']} | {s['stage']} | {100 * s['accuracy']:.2f}% | "
                         f"{s['slim_bytes']:,} | {s['huffman_bytes']:,} | "
                         f"{s['stdlib_bytes']:,} | {s['ratio']}x |")
    if rows:
        lines += ["", "| init | clusters | test accuracy | .slim bytes |", "|---|---|---|---|"]
        lines += [f"| {r['init']} | {r['clusters']} | {100 * r['accuracy']:.2f}% | "
                  f"{r['slim_bytes']:,} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer epochs, no ablation")
    p.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/...)")
    args = p.parse_args(argv)
    from slimkit.bench.environment import environment
    from slimkit.progress import set_quiet

    set_quiet(True)
    output = args.output or RESULTS / ("compact-quick.json" if args.quick else "compact.json")
    started = time.perf_counter()
    results = [compress_model(name, args.quick) for name in MODELS]
    rows = [] if args.quick else ablation()
    payload = {
        "benchmark": "Deep Compression (prune -> cluster -> entropy-code) into .slim files; "
                     "sizes are real files on disk; accuracy on builtin:digits:test",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_compact.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "environment": environment(),
        "targets": {r["model"]: r["targets"] for r in results},
        "models": results, "ablation_digits_mlp": rows,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(output, payload)
    print(markdown(results, rows))
    print(f"\nwrote {output} in {payload['total_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
