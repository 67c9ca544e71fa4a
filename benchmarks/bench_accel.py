"""Acceleration benchmark: runtimes, pipeline parallelism and the tuner, each side by side.

Three sections, each measured interleaved within one run (rounds rotate who goes first; threads
pinned), so its ratios hold on a shared, noisy machine:

    runtimes   torch eager vs torch.compile (inductor) vs ONNX Runtime, digits-cnn and
               resnet18-cifar, batch 1 and 32, 1 thread (``slimkit.bench.core``); torch.compile's
               compile time is reported apart (``compile_seconds``), not in the latencies
    pipeline   resnet18-cifar, 2-stage PipelineParallel (1 thread per stage, micro-batches of
               8) vs one process with 1 and with 2 threads, on the same examples; outputs
               compared with the single-process run
    tuner      ``slimkit.bench.tune`` on resnet18-cifar (ONNX Runtime): latency at batch 1, and
               throughput within a latency bound; the final race is default vs chosen,
               side by side (the tuner keeps the default unless beaten beyond noise)

Usage:
    python benchmarks/bench_accel.py            # full run (torch.compile compiles 4 graphs)
    python benchmarks/bench_accel.py --quick    # smoke run (indicative numbers only)

Writes ``benchmarks/results/accel.json`` (``accel-quick.json`` with ``--quick``) atomically.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

from common import cpu_detail, wait_until_idle, write_json  # noqa: E402

MODELS = ("builtin:digits-cnn", "builtin:resnet18-cifar")
PIPELINE_MODEL = "builtin:resnet18-cifar"


@dataclass(frozen=True)
class Timing:
    rounds: int
    round_seconds: float
    pipeline_examples: int
    tune_rounds: int


FULL = Timing(rounds=7, round_seconds=0.5, pipeline_examples=128, tune_rounds=6)
QUICK = Timing(rounds=3, round_seconds=0.1, pipeline_examples=32, tune_rounds=4)


def runtimes_section(timing: Timing) -> dict[str, Any]:
    from slimkit.bench.core import BenchConfig, benchmark
    from slimkit.load import load_model

    config = BenchConfig(runtimes=("torch", "torch-compile", "onnxruntime"), threads=(1,),
                         batches=(1, 32), rounds=timing.rounds,
                         round_seconds=timing.round_seconds, warmup=2)
    out: dict[str, Any] = {}
    for spec in MODELS:
        log(f"runtimes: {spec}")
        result = benchmark([load_model(spec)], config).to_dict()
        out[spec] = {"rows": [{k: row[k] for k in ("runtime", "batch", "p50_ms", "p90_ms",
                                                     "throughput", "speedup", "compile_seconds",
                                                     "other_cpu_cores")}
                              for row in result["rows"]], "warnings": result["warnings"]}
    return out


def pipeline_section(timing: Timing) -> dict[str, Any]:
    import torch

    from slimkit.load import load_model
    from slimkit.parallel import PipelineParallel

    model = load_model(PIPELINE_MODEL)
    module = model.module.eval()
    x = np.random.default_rng(0).standard_normal(
        (timing.pipeline_examples, 3, 32, 32)).astype(np.float32)
    micro = 8

    def single(threads: int) -> Any:
        def run() -> np.ndarray:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with torch.inference_mode():
                    return np.concatenate([module(torch.from_numpy(x[i:i + micro])).numpy()
                                           for i in range(0, len(x), micro)])
            finally:
                torch.set_num_threads(before)
        return run

    log("pipeline: starting 2 stages")
    start = time.perf_counter()
    with PipelineParallel(PIPELINE_MODEL, stages=2, micro_batch=micro) as pp:
        start_s = time.perf_counter() - start
        cases = {"single-1thread": single(1), "single-2threads": single(2),
                 "pipeline-2stages": lambda: pp.run({"input": x})[0]}
        reference = cases["single-1thread"]()
        diff = float(np.max(np.abs(cases["pipeline-2stages"]() - reference)))
        rounds = interleave(cases, timing.rounds, len(x))
        plan = pp.describe()["plan"]
    return {"model": PIPELINE_MODEL, "examples": len(x), "micro_batch": micro,
            "pipeline_start_seconds": round(start_s, 2), "plan": plan,
            "max_abs_diff_vs_single": diff, **summarise(rounds, "single-1thread")}


def interleave(cases: dict[str, Any], rounds: int, examples: int) -> list[dict[str, float]]:
    names = list(cases)
    out = []
    for r in range(rounds):
        row = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            cases[name]()
            row[name] = examples / (time.perf_counter() - start)
        log(f"  round {r + 1}: " + ", ".join(f"{k} {v:.1f}/s" for k, v in row.items()))
        out.append(row)
    return out


def summarise(rounds: list[dict[str, float]], base: str) -> dict[str, Any]:
    names = list(rounds[0])
    return {"throughput_median": {n: round(statistics.median(r[n] for r in rounds), 2)
                                  for n in names},
            "ratio_vs_" + base: {n: round(statistics.median(r[n] / r[base] for r in rounds), 3)
                                 for n in names},
            "rounds": rounds}


def tuner_section(timing: Timing) -> dict[str, Any]:
    from slimkit.bench.tune import TuneConfig, tune
    from slimkit.load import load_model

    model = load_model("builtin:resnet18-cifar")
    out = {}
    for label, config in {
        "latency": TuneConfig(rounds=timing.tune_rounds),
        "throughput_within_300ms": TuneConfig(objective="throughput", latency_bound_ms=300.0,
                                              batches=(1, 8, 32), rounds=timing.tune_rounds),
    }.items():
        log(f"tuner: {label}")
        result = tune(model, config).to_dict()
        final = result["steps"][-1]
        out[label] = {"chosen": result["config"]["options"] | {"batch": result["config"]["batch"]},
                      "default_score": result["default_score"],
                      "chosen_score": result["chosen_score"], "unit": result["unit"],
                      "gain_vs_default": result["gain"],
                      "final_race": final, "steps": result["steps"]}
    return out


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def markdown(payload: dict[str, Any]) -> str:
    lines = ["| model | runtime | batch | p50 ms | speedup vs torch | compile s |",
             "|---|---|---|---|---|---|"]
    for spec, section in payload["runtimes"].items():
        for row in section["rows"]:
            lines.append(f"| {spec} | {row['runtime']} | {row['batch']} | {row['p50_ms']:.2f} | "
                         f"{row['speedup']:.2f}x | {row['compile_seconds']:.1f} |")
    p = payload["pipeline"]
    lines += ["", "| pipeline case | examples/s | vs single-1thread |", "|---|---|---|"]
    for name, value in p["throughput_median"].items():
        lines.append(f"| {name} | {value:.1f} | {p['ratio_vs_single-1thread'][name]:.2f}x |")
    lines += ["", "| tuner objective | default | chosen | gain | chosen config |",
              "|---|---|---|---|---|"]
    for label, t in payload["tuner"].items():
        lines.append(f"| {label} | {t['default_score']} {t['unit']} | {t['chosen_score']} | "
                     f"{t['gain_vs_default']:.2f}x | {t['chosen']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (indicative only)")
    p.add_argument("--only", choices=["runtimes", "pipeline", "tuner"], action="append",
                   help="run only these sections (repeatable)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args(argv)
    timing = QUICK if args.quick else FULL
    output = args.output or RESULTS / ("accel-quick.json" if args.quick else "accel.json")
    from slimkit.bench.environment import environment

    started = time.perf_counter()
    if args.wait_idle > 0:
        wait_until_idle(args.wait_idle)
    load_before = os.getloadavg()
    sections = {"runtimes": runtimes_section, "pipeline": pipeline_section,
                "tuner": tuner_section}
    chosen = args.only or list(sections)
    payload: dict[str, Any] = {
        "benchmark": "acceleration: runtimes, pipeline parallel, tuner (side by side)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_accel.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "timing": timing.__dict__,
        "environment": {**environment(), "cpu_detail": cpu_detail()},
    }
    for name in chosen:
        payload[name] = sections[name](timing)
    payload["load_average"] = {"before": load_before, "after": os.getloadavg()}
    payload["total_seconds"] = round(time.perf_counter() - started, 1)
    write_json(output, payload)
    if len(chosen) == len(sections):
        print(markdown(payload))
    log(f"wrote {output} in {payload['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
