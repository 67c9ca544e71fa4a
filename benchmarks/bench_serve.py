"""Serving benchmark: ``slimkit serve`` with dynamic batching vs without, 16 concurrent clients.

Two servers run side by side in this process on loopback, on the same model and runtime (ONNX
Runtime, 1 intra-op thread): ``batched`` (max batch 16, max wait 2 ms) and ``none`` (max batch
1). A separate client process keeps 16 threads each sending one-example JSON requests (one
kept-alive connection per client thread) for a fixed count; rounds alternate the
two servers (rotating who goes first). Reported per case: requests/s (median over rounds),
client-side p50/p90/p99 latency over all rounds, and the server's batch-size histogram.

The client is Python (http.client): for a tiny model it costs more CPU than the model, and the
2 cores are shared between clients and server, so the figures describe this whole loop.

Usage:
    python benchmarks/bench_serve.py            # full run
    python benchmarks/bench_serve.py --quick    # smoke run (indicative numbers only)

Writes ``benchmarks/results/serve.json`` (``serve-quick.json`` with ``--quick``) atomically.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shlex
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from bench_runtimes import cpu_detail, wait_until_idle, write_json  # noqa: E402

MODELS = ("builtin:digits-cnn", "builtin:resnet18-cifar")
CLIENTS = 16
CASES = {"none": {"max_batch": 1, "max_wait_ms": 0.0},
         "batched": {"max_batch": 16, "max_wait_ms": 2.0}}


def load(port: int, body: bytes, clients: int, per_client: int) -> dict[str, Any]:
    """(In the client process.) ``clients`` threads x ``per_client`` requests; latencies."""
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        mine, bad = [], []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)  # kept alive
        for _ in range(per_client):
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    bad.append(response.status)
            except OSError:
                bad.append(-1)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"seconds": wall, "requests": len(latencies), "errors": errors,
            "throughput": len(latencies) / wall, "latencies_ms": [x * 1e3 for x in latencies]}


def bench_model(spec: str, rounds: int, per_client: int, threads: int,
                pool: ProcessPoolExecutor) -> dict[str, Any]:
    from slimkit.load import load_model
    from slimkit.runtime import RuntimeOptions
    from slimkit.serve import InferenceServer, ServeConfig

    model = load_model(spec)
    shape = model.inputs[0].concrete_shape(1)
    body = json.dumps({"inputs": np.random.default_rng(0).standard_normal(shape)
                       .astype(np.float32).tolist()}).encode()
    servers = {name: InferenceServer(model, ServeConfig(
        port=0, runtime="onnxruntime", options=RuntimeOptions(threads=threads), max_queue=1024,
        **knobs)).start() for name, knobs in CASES.items()}
    try:
        for server in servers.values():  # warm-up
            pool.submit(load, server.port, body, CLIENTS, 2).result()
        per_round: list[dict[str, Any]] = []
        names = list(servers)
        for r in range(rounds):
            row = {}
            for name in names[r % 2:] + names[:r % 2]:
                row[name] = pool.submit(load, servers[name].port, body, CLIENTS,
                                        per_client).result()
                print(f"  {spec} round {r + 1} {name:8s} {row[name]['throughput']:7.1f} req/s",
                      file=sys.stderr, flush=True)
            per_round.append(row)
        metrics = {name: s.snapshot() for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    return summarise(per_round, metrics)


def summarise(per_round: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in CASES:
        lat = np.concatenate([r[name]["latencies_ms"] for r in per_round])
        out[name] = {
            "throughput_median": round(statistics.median(r[name]["throughput"]
                                                         for r in per_round), 2),
            "throughput_per_round": [round(r[name]["throughput"], 2) for r in per_round],
            "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 2)
                           for q in (50, 90, 99)},
            "errors": sum(len(r[name]["errors"]) for r in per_round),
            "server_batch_sizes": metrics[name]["batch_sizes"],
            "server_latency_ms": metrics[name]["latency_ms"],
        }
    out["batched_over_none_throughput"] = round(statistics.median(
        r["batched"]["throughput"] / r["none"]["throughput"] for r in per_round), 3)
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = ["| model | case | req/s (median) | p50 ms | p99 ms | errors | batched/none |",
             "|---|---|---|---|---|---|---|"]
    for spec, r in results.items():
        for name in CASES:
            c = r[name]
            lines.append(f"| {spec} | {name} | {c['throughput_median']:.1f} | "
                         f"{c['latency_ms']['p50']:.1f} | {c['latency_ms']['p99']:.1f} | "
                         f"{c['errors']} | {r['batched_over_none_throughput']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import multiprocessing

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (indicative only)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of each server")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model specs")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args(argv)
    rounds, per_client = (2, 10) if args.quick else (6, 40)
    output = args.output or RESULTS / ("serve-quick.json" if args.quick else "serve.json")
    from slimkit.environment import environment

    started = time.perf_counter()
    if args.wait_idle > 0:
        wait_until_idle(args.wait_idle)
    load_before = os.getloadavg()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = {spec: bench_model(spec, rounds, per_client, args.threads, pool)
                   for spec in args.models.split(",") if spec}
    payload = {
        "benchmark": f"serve: dynamic batching vs none, {CLIENTS} concurrent clients, "
                     "one example per request, ONNX Runtime",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_serve.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "rounds": rounds, "requests_per_client_per_round": per_client,
        "clients": CLIENTS, "cases": CASES, "server_threads": args.threads,
        "environment": {**environment(), "cpu_detail": cpu_detail()},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "results": results,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(output, payload)
    print(markdown(results))
    print(f"wrote {output} in {payload['total_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
