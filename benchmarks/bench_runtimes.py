"""Runtime benchmark of the foundation: PyTorch eager vs ONNX Runtime (CPU EP), fp32.

Each model is measured in its own ``slimkit.bench.core.benchmark`` call, so every table compares
torch and ONNX Runtime on the same model, interleaved in the same process, at 1 and 2 threads.
Compare ratios inside a model, not milliseconds across models or machines.

Usage:
    python benchmarks/bench_runtimes.py            # full run (~4-5 min on 2 idle cores)
    python benchmarks/bench_runtimes.py --wait-idle 600 --retries 2   # on a shared machine
    python benchmarks/bench_runtimes.py --quick    # smoke run (indicative numbers only)
    python benchmarks/bench_runtimes.py --models resnet18,minilm

The JSON result (machine, date, command, every row) is written atomically to
``benchmarks/results/runtimes.json`` (``runtimes-quick.json`` with ``--quick``); the summary
table is printed as Markdown, ready for ``benchmarks/RESULTS.md``. The CPU time other
processes took while each model was measured is recorded too: on a 2-core machine a busy
neighbour makes torch's 2-thread numbers collapse (4-100x slower), so check ``contention``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import BUSY_CORES, CpuMeter, cpu_detail, wait_until_idle, write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# model -> batch sizes measured (minilm at BenchConfig.sequence tokens)
CASES: dict[str, tuple[int, ...]] = {
    "digits-cnn": (1, 32),
    "resnet18-cifar": (1,),
    "resnet18": (1,),
    "mobilenetv2": (1,),
    "minilm": (1,),
}
THREADS = (1, 2)
RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Timing:
    """How long each (model, runtime, threads, batch) case is measured."""

    rounds: int
    round_seconds: float
    warmup: int


def _timed_wait(max_seconds: float) -> float:
    start = time.perf_counter()
    wait_until_idle(max_seconds)
    return time.perf_counter() - start


FULL = Timing(rounds=9, round_seconds=1.0, warmup=5)
QUICK = Timing(rounds=3, round_seconds=0.1, warmup=2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="short smoke run (3 short rounds; indicative numbers only)")
    p.add_argument("--models", type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
                   default=list(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--rounds", type=int, help="override the number of interleaved rounds")
    p.add_argument("--round-seconds", type=float, help="override the length of a round")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each model, wait up to this long for other processes to go "
                        "quiet (default 0: do not wait; the contention is recorded anyway)")
    p.add_argument("--retries", type=int, default=0,
                   help="measure a model again (up to this many times) when other processes "
                        f"used over {BUSY_CORES} cores while it ran (default 0)")
    p.add_argument("--sequence", type=int, default=128, help="tokens per MiniLM input")
    p.add_argument("-o", "--output", type=Path,
                   help="JSON file to write (default benchmarks/results/runtimes.json, "
                        "runtimes-quick.json with --quick)")
    args = p.parse_args(argv)
    unknown = [m for m in args.models if m not in CASES]
    if unknown or not args.models:
        p.error(f"unknown model(s) {unknown}; choose from {','.join(CASES)}")
    return args


def timing_of(args: argparse.Namespace) -> Timing:
    base = QUICK if args.quick else FULL
    return Timing(rounds=args.rounds or base.rounds,
                  round_seconds=args.round_seconds or base.round_seconds, warmup=base.warmup)


def bench_model(name: str, timing: Timing, sequence: int) -> dict[str, Any]:
    """Load ``builtin:NAME`` and measure torch vs ORT at every thread count and batch size."""
    from slimkit import load_model
    from slimkit.bench.core import BenchConfig, benchmark

    model = load_model(f"builtin:{name}")
    start, meter = time.perf_counter(), CpuMeter()
    config = BenchConfig(runtimes=RUNTIMES, threads=THREADS, batches=CASES[name],
                         sequence=sequence, warmup=timing.warmup, rounds=timing.rounds,
                         round_seconds=timing.round_seconds)
    result = benchmark([model], config).to_dict()
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["contention"] = meter.cores()
    if result["contention"]["foreign_cores"] > BUSY_CORES:
        print(f"  warning: other processes used {result['contention']['foreign_cores']:.2f} "
              f"cores while {name} was measured; its numbers are unreliable", file=sys.stderr)
    return result


def summary(per_model: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (model, batch, threads): torch and ORT median latency and their ratio."""
    lines = []
    for name, result in per_model.items():
        by_case = {(r["threads"], r["batch"], r["runtime"]): r for r in result["rows"]}
        for batch in CASES[name]:
            for threads in THREADS:
                torch_row = by_case[(threads, batch, "torch")]
                ort_row = by_case[(threads, batch, "onnxruntime")]
                lines.append({
                    "model": name, "batch": batch, "threads": threads,
                    "torch_p50_ms": round(torch_row["p50_ms"], 3),
                    "ort_p50_ms": round(ort_row["p50_ms"], 3),
                    "ort_speedup": round(torch_row["p50_ms"] / ort_row["p50_ms"], 3),
                    "torch_peak_memory_mb": torch_row["peak_memory_mb"],
                    "ort_peak_memory_mb": ort_row["peak_memory_mb"],
                })
    return lines


def markdown(lines: list[dict[str, Any]], sequence: int) -> str:
    out = ["| model | batch | threads | torch p50 ms | ORT p50 ms | ORT speedup over torch |",
           "|---|---|---|---|---|---|"]
    for line in lines:
        label = line["model"] + (f" ({sequence} tokens)" if line["model"] == "minilm" else "")
        out.append(f"| {label} | {line['batch']} | {line['threads']} | "
                   f"{line['torch_p50_ms']:.2f} | {line['ort_p50_ms']:.2f} | "
                   f"{line['ort_speedup']:.2f}x |")
    return "\n".join(out)


def gemm_gflops(size: int = 2048, runs: int = 5) -> dict[str, float]:
    """fp32 torch.mm speed at each thread count: the ceiling ANCHORS.md quotes (74 / 155
    GFLOP/s on its Zen3), to tell how this machine compares before reading milliseconds."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    before, out = torch.get_num_threads(), {}
    try:
        for threads in THREADS:
            torch.set_num_threads(threads)
            a @ b
            best = min(_seconds(lambda: a @ b) for _ in range(runs))
            out[f"{threads}_thread"] = round(2 * size**3 / best / 1e9, 1)
    finally:
        torch.set_num_threads(before)
    return out


def _seconds(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    timing = timing_of(args)
    if timing.rounds < 1 or timing.round_seconds <= 0:
        raise SystemExit("--rounds must be >= 1 and --round-seconds > 0")
    output = args.output or RESULTS / ("runtimes-quick.json" if args.quick else "runtimes.json")
    from slimkit.bench.environment import environment

    started = time.perf_counter()
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load_before, overall, waited = os.getloadavg(), CpuMeter(), 0.0
    if args.wait_idle > 0:
        waited += _timed_wait(args.wait_idle)
    gemm = gemm_gflops()
    per_model: dict[str, dict[str, Any]] = {}
    for name in args.models:
        print(f"[{time.perf_counter() - started:6.1f}s] {name} ...", file=sys.stderr, flush=True)
        for attempt in range(args.retries + 1):
            if args.wait_idle > 0:
                waited += _timed_wait(args.wait_idle)
            per_model[name] = bench_model(name, timing, args.sequence)
            per_model[name]["attempt"] = attempt + 1
            if per_model[name]["contention"]["foreign_cores"] <= BUSY_CORES:
                break
    lines = summary(per_model)
    payload = {
        "benchmark": "runtimes: PyTorch eager vs ONNX Runtime CPU EP, fp32, p50 latency",
        "date": date,
        "command": shlex.join(["python", "benchmarks/bench_runtimes.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "timing": asdict(timing),
        "sequence": args.sequence,
        "environment": {**environment(), "cpu_detail": cpu_detail(),
                        "gemm_fp32_gflops": gemm},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "contention": overall.cores(),
        "total_seconds": round(time.perf_counter() - started, 1),
        "waited_for_idle_seconds": round(waited, 1),
        "summary": lines,
        "models": per_model,
    }
    write_json(output, payload)
    print(markdown(lines, args.sequence))
    print(f"\nwrote {output} in {payload['total_seconds']} s "
          f"({payload['waited_for_idle_seconds']} s waiting for an idle machine)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
