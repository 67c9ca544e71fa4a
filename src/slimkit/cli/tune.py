"""``slimkit tune``."""

from __future__ import annotations

import argparse
import json

from slimkit.cli.common import csv, load, model_args

HELP = "find the fastest threads/execution mode/optimisation level/batch by measurement"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("-o", "--output", required=True,
                   help="JSON runtime config to write (load with `slimkit bench --config`)")
    p.add_argument("--runtime", default="onnxruntime",
                   help="runtime to tune (onnxruntime, openvino, torch, torch-compile), or "
                        "auto: the fastest of onnxruntime and openvino here, measured first")
    p.add_argument("--objective", default="latency", choices=["latency", "throughput"],
                   help="latency at batch 1, or throughput within --latency-bound-ms")
    p.add_argument("--latency-bound-ms", type=float,
                   help="throughput objective: the p99 latency of one batch may not exceed this")
    p.add_argument("--threads", type=csv(int), help="intra-op thread counts to try "
                                                    "(default 1..available cores)")
    p.add_argument("--batch", type=csv(int), default=(1, 4, 16, 32),
                   help="batch sizes to try for throughput (default 1,4,16,32)")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds per race")
    p.add_argument("--round-seconds", type=float, default=0.15)
    p.add_argument("--min-gain", type=float, default=0.03,
                   help="how much better than the incumbent a candidate must be (default 3%%)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")


def run(args: argparse.Namespace) -> None:
    from slimkit.bench.tune import TuneConfig, tune
    from slimkit.cli.console import print_table
    from slimkit.io import check_output_path

    check_output_path(args.output)
    config = TuneConfig(runtime=args.runtime, objective=args.objective,
                        latency_bound_ms=args.latency_bound_ms, threads=args.threads,
                        batches=args.batch, rounds=args.rounds, round_seconds=args.round_seconds,
                        min_gain=args.min_gain)
    result = tune(load(args, args.model), config)
    path = result.config.save(args.output)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    rows = [{"step": s["step"], **c, result.unit: score, "chosen": i == s["chosen"]}
            for s in result.steps for i, (c, score) in enumerate(zip(s["candidates"], s["scores"],
                                                                    strict=True))]
    print_table(f"Tuning races ({config.objective.value}; first row of each step: incumbent)",
                rows, ["step", "threads", "inter_op_threads", "execution_mode",
                       "graph_optimization", "batch", result.unit, "chosen"])
    print(f"chosen: {result.config.runtime} {result.config.to_dict()['options']} batch "
          f"{result.config.batch}: {result.chosen_score} {result.unit} vs default "
          f"{result.default_score} ({result.gain:.2f}x) -> {path}")
