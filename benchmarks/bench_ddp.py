"""Data-parallel fine-tuning throughput: one process with all the cores vs 2 DDP workers
(torch.distributed, gloo) with half the cores each, side by side in one run.

builtin:resnet18-cifar (11.2 M parameters, BatchNorm) on digits upsampled to 3x32x32
(``common.digits_as``), Adam, the same global batch and seed for both. Each measurement
is one ``slimkit.train.finetune`` call of S steps (``max_batches``); the time per step
is ``(t(S_long) - t(S_short)) / (S_long - S_short)``, which removes the fixed costs of a call
(model copy, pickling, worker start-up, weights back through safetensors), reported apart as
``fixed_s``. Rounds interleave the two set-ups; medians. The first DDP call of a process also
starts multiprocessing's forkserver (torch imported once): reported as ``cold_call_s``.

    python benchmarks/bench_ddp.py [--quick]   -> benchmarks/results/ddp.json (ddp-quick.json)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
WORKERS = 2


def log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


def timed_call(model: Any, data: Any, config: Any) -> tuple[float, list[float]]:
    from slimkit.train.finetune import finetune

    start = time.perf_counter()
    result = finetune(model, data, config)
    return time.perf_counter() - start, result.losses


def measure(args: argparse.Namespace, started: float) -> dict[str, Any]:
    from common import digits_as

    import slimkit
    from slimkit.parallel.assign import available_cores
    from slimkit.train.hooks import FinetuneConfig

    cores = available_cores()
    torch.set_num_threads(cores)  # the one-process set-up uses every core
    model = slimkit.load_model("builtin:resnet18-cifar")
    data = digits_as(model, "train")
    setups = {f"1 process x {cores} threads": 1,
              f"{WORKERS} workers x {max(1, cores // WORKERS)} threads": WORKERS}

    def config(steps: int, workers: int) -> FinetuneConfig:
        return FinetuneConfig(epochs=1, batch_size=args.batch, max_batches=steps, seed=0,
                              workers=workers)

    cold, _ = timed_call(model, data, config(1, WORKERS))
    log(started, f"cold DDP call (forkserver start + 1 step): {cold:.1f} s")
    timed_call(model, data, config(1, 1))  # warm-up of the one-process set-up
    times: dict[str, dict[int, list[float]]] = {name: {s: [] for s in args.steps}
                                                for name in setups}
    losses: dict[str, list[float]] = {}
    for r in range(args.rounds):
        order = list(setups.items()) if r % 2 == 0 else list(setups.items())[::-1]
        for name, workers in order:
            for steps in args.steps:
                seconds, losses[name] = timed_call(model, data, config(steps, workers))
                times[name][steps].append(seconds)
                log(started, f"round {r}: {name}, {steps} steps: {seconds:.2f} s "
                             f"(load {os.getloadavg()[0]:.1f})")
    short, long = args.steps
    rows = {}
    for name in setups:
        median = {s: statistics.median(times[name][s]) for s in args.steps}
        per_step = (median[long] - median[short]) / (long - short)
        rows[name] = {"seconds_per_step": round(per_step, 3),
                      "examples_per_s": round(args.batch / per_step, 1),
                      "fixed_s": round(median[short] - short * per_step, 2),
                      "calls_s": {str(s): [round(t, 2) for t in times[name][s]]
                                  for s in args.steps},
                      "last_loss": round(losses[name][-1], 4)}
    one, ddp = (rows[name]["seconds_per_step"] for name in setups)
    return {"cores": cores, "global_batch": args.batch, "steps": list(args.steps),
            "rounds": args.rounds, "cold_call_s": round(cold, 1), "setups": rows,
            "ddp_speedup_per_step": round(one / ddp, 3)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller batch, fewer steps (~2 min)")
    p.add_argument("--output", help="default: benchmarks/results/ddp.json (ddp-quick.json)")
    args = p.parse_args(argv)
    args.batch = 32 if args.quick else 64
    args.steps = (1, 3) if args.quick else (2, 6)
    args.rounds = 2 if args.quick else 3
    name = "ddp-quick.json" if args.quick else "ddp.json"
    args.output = args.output or str(HERE / "results" / name)
    return args


def main(argv: list[str] | None = None) -> int:
    from slimkit.bench.environment import environment
    from slimkit.io import write_text_atomic

    args = parse_args(argv)
    started = time.perf_counter()
    out: dict[str, Any] = {"quick": args.quick, "model": "builtin:resnet18-cifar",
                           "data": "digits upsampled to 3x32x32 (train split)",
                           "note": "set-ups measured side by side in one run; on a shared "
                                   "machine the figures are indicative",
                           "environment": environment(),
                           "resnet18_cifar": measure(args, started)}
    out["seconds"] = round(time.perf_counter() - started, 1)
    write_text_atomic(args.output, json.dumps(out, indent=2, default=str) + "\n")
    summary = {k: v for k, v in out["resnet18_cifar"].items() if k != "setups"}
    summary.update({name: {k: row[k] for k in ("seconds_per_step", "examples_per_s", "fixed_s")}
                    for name, row in out["resnet18_cifar"]["setups"].items()})
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
