"""Data-parallel benchmark: throughput of resnet18-cifar (batch 32, fp32, ONNX Runtime CPU EP)
run by ``slimkit.parallel.DataParallel`` with 1 and 2 single-thread workers, against one
in-process session with 1 and with 2 threads, side by side in one run.

Cases, all on the same verified ONNX export and the same inputs:

    session-1x1   one in-process ORT session, 1 thread (no inter-process cost at all)
    pool-1x1      DataParallel, 1 worker x 1 thread
    pool-2x1      DataParallel, 2 workers x 1 thread
    session-1x2   one in-process ORT session, 2 threads (intra-op parallelism)

Every round runs each case over the same batches, the order of the cases rotating from round
to round; a case's throughput in a round is examples / wall seconds. Reported: the median
throughput of each case, and the median over rounds of the within-round ratios (robust to the
machine drifting between rounds). Issue 6's targets: pool-2x1 >= 1.7x pool-1x1, and
pool-2x1 >= session-1x2. The CPU other processes used while each case ran is recorded (the
workers' own CPU is counted as ours): on a shared 2-core machine a busy neighbour takes a core
from the 2-worker and 2-thread cases, so check ``contention`` before trusting the ratios.

Usage:
    python benchmarks/bench_parallel.py --wait-idle 600   # full run (~4 min on 2 idle cores)
    python benchmarks/bench_parallel.py --quick           # smoke run (indicative numbers only)

The JSON result (machine, date, command, contention, every round) is written atomically to
``benchmarks/results/parallel.json`` (``parallel-quick.json`` with ``--quick``); a Markdown
table is printed, ready for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
from bench_runtimes import gemm_gflops  # noqa: E402
from common import BUSY_CORES, cpu_detail, wait_until_idle, write_json  # noqa: E402

MODEL = "builtin:resnet18-cifar"
BATCH = 32
CASES = ("session-1x1", "pool-1x1", "pool-2x1", "session-1x2")
TARGET_SPEEDUP = 1.7  # pool-2x1 over pool-1x1 (issue 6)


@dataclass(frozen=True)
class Timing:
    """``rounds`` rounds; in each, every case runs ``batches`` batches (after ``warmup``)."""

    rounds: int
    batches: int
    warmup: int


FULL = Timing(rounds=7, batches=8, warmup=2)
QUICK = Timing(rounds=3, batches=4, warmup=1)


class GroupCpu:
    """CPU time of other processes while a case runs: system busy time minus that of this
    process and of the given worker processes (which ``psutil.Process().cpu_times()`` of the
    parent does not include while they live)."""

    def __init__(self, worker_pids: list[int]) -> None:
        import psutil

        self._psutil = psutil
        self._procs = [psutil.Process(), *(psutil.Process(p) for p in worker_pids)]

    def _read(self) -> tuple[float, float, float, float]:
        t = self._psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        own = sum(sum(p.cpu_times()[:2]) for p in self._procs)
        return time.perf_counter(), busy, own, getattr(t, "steal", 0.0)

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
        start = self._read()
        result = fn()
        end = self._read()
        wall = max(end[0] - start[0], 1e-9)
        foreign = (end[1] - start[1]) - (end[2] - start[2])
        return result, {"seconds": wall, "own_cores": (end[2] - start[2]) / wall,
                        "foreign_cores": max(foreign, 0.0) / wall,
                        "steal_cores": (end[3] - start[3]) / wall}


class SessionCase:
    """One in-process ONNX Runtime session."""

    def __init__(self, path: Path, threads: int) -> None:
        from slimkit.load import load_model
        from slimkit.runtime import RuntimeOptions, create_session

        self.session = create_session(load_model(str(path)), "onnxruntime",
                                      RuntimeOptions(threads=threads))
        self.pids: list[int] = []

    def run(self, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        return [self.session.run(b)[0] for b in batches]

    def busy_seconds(self) -> float | None:
        return None

    def close(self) -> None:
        self.session.close()


class PoolCase:
    """A DataParallel pool of single-thread workers."""

    def __init__(self, path: Path, workers: int, pin_cores: bool) -> None:
        from slimkit.parallel import AdvancedParallelOptions, DataParallel

        start = time.perf_counter()
        self.pool = DataParallel(str(path), runtime="onnxruntime", workers=workers,
                                 threads_per_worker=1,
                                 advanced=AdvancedParallelOptions(pin_cores=pin_cores)).start()
        self.start_seconds = time.perf_counter() - start
        self.pids = self.pool.worker_pids

    def run(self, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        return [outputs[0] for outputs in self.pool.imap(batches)]

    def busy_seconds(self) -> float:
        """Seconds the workers spent inside session.run so far (all workers together)."""
        return float(sum(s["busy_seconds"] for s in self.pool.stats()))

    def close(self) -> None:
        self.pool.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (indicative only)")
    p.add_argument("--rounds", type=int, help="override the number of interleaved rounds")
    p.add_argument("--batches", type=int, help="override the batches each case runs a round")
    p.add_argument("--pin-cores", action="store_true",
                   help="bind worker i of each pool to core i (default: the OS places them)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to this long for other processes to go quiet")
    p.add_argument("-o", "--output", type=Path,
                   help="JSON file to write (default benchmarks/results/parallel.json, "
                        "parallel-quick.json with --quick)")
    args = p.parse_args(argv)
    if (args.rounds is not None and args.rounds < 1) or \
            (args.batches is not None and args.batches < 1):
        p.error("--rounds and --batches must be >= 1")
    return args


def timing_of(args: argparse.Namespace) -> Timing:
    base = QUICK if args.quick else FULL
    return Timing(rounds=args.rounds or base.rounds, batches=args.batches or base.batches,
                  warmup=base.warmup)


def measure(path: Path, timing: Timing, pin_cores: bool) -> dict[str, Any]:
    """Open every case, warm it up, then run the interleaved rounds."""
    from slimkit.data import synthetic
    from slimkit.load import load_model

    model = load_model(str(path))
    data = synthetic(model.inputs, BATCH * timing.batches, seed=0)
    batches = [inputs for inputs, _ in data.batches(BATCH)]
    makers: dict[str, Callable[[], Any]] = {
        "session-1x1": lambda: SessionCase(path, 1),
        "pool-1x1": lambda: PoolCase(path, 1, pin_cores),
        "pool-2x1": lambda: PoolCase(path, 2, pin_cores),
        "session-1x2": lambda: SessionCase(path, 2),
    }
    cases: dict[str, Any] = {}
    try:
        for name in CASES:
            cases[name] = makers[name]()
        warm = {name: case.run(batches[:max(timing.warmup, 1)])
                for name, case in cases.items()}  # warm-up, and outputs to compare
        meter = GroupCpu([pid for case in cases.values() for pid in case.pids])
        rounds = [_round(r, cases, batches, meter) for r in range(timing.rounds)]
        check = {name: float(max(np.max(np.abs(a - b)) for a, b in
                                 zip(out, warm["session-1x1"], strict=True)))
                 for name, out in warm.items()}
        starts = {name: round(case.start_seconds, 2) for name, case in cases.items()
                  if isinstance(case, PoolCase)}
    finally:
        for case in cases.values():
            case.close()
    return {"rounds": rounds, "max_abs_diff_vs_session_1x1": check,
            "pool_start_seconds": starts}


def _round(r: int, cases: dict[str, Any], batches: list[dict[str, np.ndarray]],
           meter: GroupCpu) -> dict[str, Any]:
    names = list(cases)
    order = names[r % len(names):] + names[:r % len(names)]
    out: dict[str, Any] = {"order": order}
    for name in order:
        case = cases[name]
        busy_before = case.busy_seconds()
        _, cpu = meter.measure(functools.partial(case.run, batches))
        busy = case.busy_seconds()
        out[name] = {
            "batches": len(batches),
            "throughput": round(len(batches) * BATCH / cpu["seconds"], 2),
            "seconds": round(cpu["seconds"], 3),
            "own_cores": round(cpu["own_cores"], 3),
            "foreign_cores": round(cpu["foreign_cores"], 3),
            "steal_cores": round(cpu["steal_cores"], 3),
            # mean time inside session.run per batch in the workers (pools only)
            "worker_ms_per_batch": None if busy is None or busy_before is None else
            round((busy - busy_before) * 1e3 / len(batches), 1),
        }
        print(f"  round {r + 1} {name:12s} {out[name]['throughput']:7.1f} img/s  "
              f"(other processes {cpu['foreign_cores']:.2f} cores)", file=sys.stderr,
              flush=True)
    return out


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    per_case = {}
    for name in CASES:
        rows = [r[name] for r in rounds]
        worker_ms = [row["worker_ms_per_batch"] for row in rows
                     if row["worker_ms_per_batch"] is not None]
        per_case[name] = {
            "throughput_median": med([row["throughput"] for row in rows]),
            "throughput_min": min(row["throughput"] for row in rows),
            "throughput_max": max(row["throughput"] for row in rows),
            "ms_per_batch_median": med([row["seconds"] * 1e3 / row["batches"] for row in rows]),
            "worker_ms_per_batch_median": med(worker_ms) if worker_ms else None,
            "foreign_cores_median": med([row["foreign_cores"] for row in rows]),
            "foreign_cores_max": max(row["foreign_cores"] for row in rows),
        }
    ratios = {
        "pool-2x1 / pool-1x1": ("pool-2x1", "pool-1x1"),
        "pool-2x1 / session-1x2": ("pool-2x1", "session-1x2"),
        "pool-1x1 / session-1x1": ("pool-1x1", "session-1x1"),
        "session-1x2 / session-1x1": ("session-1x2", "session-1x1"),
        "pool-2x1 / session-1x1": ("pool-2x1", "session-1x1"),
    }
    ratio_medians = {label: med([r[a]["throughput"] / r[b]["throughput"] for r in rounds])
                     for label, (a, b) in ratios.items()}
    busy = max(c["foreign_cores_median"] for c in per_case.values())
    return {
        "cases": per_case,
        "ratios": ratio_medians,
        "targets": {
            f"pool-2x1 >= {TARGET_SPEEDUP}x pool-1x1":
                ratio_medians["pool-2x1 / pool-1x1"] >= TARGET_SPEEDUP,
            "pool-2x1 >= session-1x2": ratio_medians["pool-2x1 / session-1x2"] >= 1.0,
        },
        "contended": busy > BUSY_CORES,
    }


def markdown(summary: dict[str, Any]) -> str:
    out = ["| case | img/s (median) | min-max | ms / batch of 32 | worker ms / batch | "
           "other processes (cores, median) |", "|---|---|---|---|---|---|"]
    for name, c in summary["cases"].items():
        worker = "-" if c["worker_ms_per_batch_median"] is None else \
            f"{c['worker_ms_per_batch_median']:.0f}"
        out.append(f"| {name} | {c['throughput_median']:.1f} | {c['throughput_min']:.1f}-"
                   f"{c['throughput_max']:.1f} | {c['ms_per_batch_median']:.0f} | {worker} | "
                   f"{c['foreign_cores_median']:.2f} |")
    out += ["", "| ratio (median of within-round ratios) | value |", "|---|---|"]
    out += [f"| {label} | {value:.2f}x |" for label, value in summary["ratios"].items()]
    out += ["", *(f"- target {label}: {'met' if ok else 'NOT met'}"
                  for label, ok in summary["targets"].items())]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    timing = timing_of(args)
    output = args.output or RESULTS / ("parallel-quick.json" if args.quick else "parallel.json")
    from slimkit.bench.environment import environment
    from slimkit.export.onnx import export_onnx
    from slimkit.load import load_model
    from slimkit.parallel import available_cores

    started = time.perf_counter()
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    waited = 0.0
    if args.wait_idle > 0:
        t0 = time.perf_counter()
        wait_until_idle(args.wait_idle)
        waited = time.perf_counter() - t0
    gemm = {} if args.quick else gemm_gflops()
    with tempfile.TemporaryDirectory(prefix="slimkit-bench-parallel-") as tmp:
        path = export_onnx(load_model(MODEL), Path(tmp) / "resnet18-cifar.onnx").path
        print(f"[{time.perf_counter() - started:5.1f}s] measuring {', '.join(CASES)}",
              file=sys.stderr, flush=True)
        measured = measure(path, timing, args.pin_cores)
    summary = summarise(measured["rounds"])
    payload = {
        "benchmark": "parallel: DataParallel workers vs one ONNX Runtime session, "
                     f"{MODEL} batch {BATCH}, fp32, throughput",
        "date": date,
        "command": shlex.join(["python", "benchmarks/bench_parallel.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "timing": asdict(timing),
        "pin_cores": args.pin_cores,
        "environment": {**environment(), "cpu_detail": cpu_detail(),
                        "available_cores": available_cores(), "gemm_fp32_gflops": gemm},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "waited_for_idle_seconds": round(waited, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        **measured,
    }
    write_json(output, payload)
    print(markdown(summary))
    if summary["contended"]:
        print("\nwarning: other processes used over "
              f"{BUSY_CORES} cores during the run; the ratios are unreliable", file=sys.stderr)
    print(f"\nwrote {output} in {payload['total_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
