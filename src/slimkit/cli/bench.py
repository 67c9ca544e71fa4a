"""``slimkit bench``."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import TYPE_CHECKING

from slimkit.cli.common import csv, load, model_args

if TYPE_CHECKING:
    from slimkit.bench.core import BenchConfig

HELP = "latency/throughput of models side by side"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p, many=True)
    p.add_argument("--runtime", type=csv(str), default=("torch", "onnxruntime"),
                   help="comma-separated runtimes (torch, torch-compile, onnxruntime, openvino); "
                        "default torch,onnxruntime")
    p.add_argument("--threads", type=csv(int), default=(1,), help="e.g. 1,2 (default 1)")
    p.add_argument("--batch", type=csv(int), default=(1,), help="e.g. 1,8 (default 1)")
    p.add_argument("--sequence", type=int, default=128, help="tokens per text input")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case")
    p.add_argument("--round-seconds", type=float, default=0.3,
                   help="about how long each case runs per round (default 0.3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per case (default 3)")
    p.add_argument("--provider", default="cpu",
                   help="execution provider / device: cpu, cuda, tensorrt, openvino")
    p.add_argument("--graph-optimization", default="all",
                   choices=["disable", "basic", "extended", "all"],
                   help="ONNX Runtime graph optimisation level (default all)")
    p.add_argument("--execution-mode", default="sequential", choices=["sequential", "parallel"],
                   help="ONNX Runtime execution mode (default sequential)")
    p.add_argument("--config", help="a runtime config from `slimkit tune` (sets the runtime, "
                                    "its options, threads and batch)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("-o", "--output", help="also write the JSON result to this file")


def with_runtime_config(config: BenchConfig, path: str) -> BenchConfig:
    """``config`` measuring the runtime, options, threads and batch of a tuned config."""
    from slimkit.runtime.config import RuntimeConfig

    tuned = RuntimeConfig.load(path)
    return replace(config, runtimes=(tuned.runtime,), threads=(tuned.options.threads,),
                   batches=(tuned.batch,), provider=tuned.options.provider,
                   runtime_options=tuned.options)


def run(args: argparse.Namespace) -> None:
    from slimkit.bench.core import BenchConfig, benchmark
    from slimkit.cli.console import print_bench
    from slimkit.io import check_output_path, write_text_atomic
    from slimkit.runtime import RuntimeOptions

    if args.output:
        check_output_path(args.output)
    config = BenchConfig(runtimes=args.runtime, threads=args.threads, batches=args.batch,
                         sequence=args.sequence, rounds=args.rounds,
                         round_seconds=args.round_seconds, warmup=args.warmup,
                         provider=args.provider,
                         runtime_options=RuntimeOptions(
                             graph_optimization=args.graph_optimization,
                             execution_mode=args.execution_mode))
    if args.config:
        config = with_runtime_config(config, args.config)
    models = [load(args, spec) for spec in args.models]
    result = benchmark(models, config).to_dict()
    if args.output:
        write_text_atomic(args.output, json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_bench(result["rows"], result["skipped"], result["warnings"])
