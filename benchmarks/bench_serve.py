"""Serving benchmark: ``slimkit serve`` with dynamic batching vs without, 16 concurrent clients.

Servers run side by side in this process on loopback, on the same model and runtime (ONNX
Runtime, 1 intra-op thread): ``batched`` (max batch 16, max wait 2 ms) and ``none`` (max batch
1). A separate client process keeps 16 threads each sending one-example JSON requests (one
kept-alive connection per client thread) for a fixed count; rounds alternate the
servers (rotating who goes first). Reported per case: requests/s (median over rounds),
client-side p50/p90/p99 latency over all rounds, the server's batch-size histogram, and the
CPU time of the batcher thread (the model's forward passes) per request: on a machine shared
with other work, wall-clock throughput swings from run to run; CPU time per request swings
less (heavy contention still inflates it through shared caches), and its ratio none/batched
is the throughput gain wherever the model's thread is the bottleneck.

``builtin:minilm`` (all-MiniLM-L6-v2 sentence embeddings) gets short search queries: real
texts tokenized by its tokenizer (5 to 13 tokens, so lengths differ between requests), each
client cycling through them. ``batched`` (the default) batches requests of identical token
counts; a third server, ``batched-padded`` (``max_padding=0.1``), also batches different
lengths padded to the longest. A short sequence is where batching pays on this CPU: a forward
pass costs a fixed ~2.5 ms (about 400 ONNX nodes, each with its own overhead) plus ~0.55 ms
per token, so one pass over a few short queries costs much less than one pass each.

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

from common import cpu_detail, wait_until_idle, write_json  # noqa: E402

MODELS = ("builtin:digits-cnn", "builtin:resnet18-cifar", "builtin:minilm")
CLIENTS = 16
CASES = {"none": {"max_batch": 1, "max_wait_ms": 0.0},
         "batched": {"max_batch": 16, "max_wait_ms": 2.0}}
SEQUENCE_CASES = {**CASES, "batched-padded": {"max_batch": 16, "max_wait_ms": 2.0,
                                              "max_padding": 0.1}}
QUERIES = (  # short search queries, as a semantic search front end receives them
    "how do I reset my password", "cheap flights to lisbon in may", "weather tomorrow",
    "python list comprehension example", "what is the capital of australia",
    "best pizza near me", "symptoms of vitamin d deficiency", "convert 5 miles to km",
    "how to boil an egg", "train times london to paris", "refund policy for damaged items",
    "why is the sky blue", "install numpy on windows", "learn spanish fast",
    "how many calories in a banana", "open a bank account online", "fix a leaking tap",
    "cancel my subscription", "who wrote pride and prejudice", "hotel with free parking",
    "change the battery of a smoke detector", "mortgage calculator", "dog food allergies",
    "translate thank you to german", "when does the store close today",
    "reset router to factory settings", "side effects of ibuprofen", "budget laptop for students",
    "how to tie a tie", "nearest electric car charger", "track my parcel",
    "what time is it in tokyo",
)


def load(port: int, bodies: list[bytes], clients: int, per_client: int) -> dict[str, Any]:
    """(In the client process.) ``clients`` threads x ``per_client`` requests, client ``i``
    cycling through ``bodies`` from ``i``; latencies."""
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        mine, bad = [], []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)  # kept alive
        for k in range(per_client):
            body = bodies[(i + k) % len(bodies)]
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

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
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
    bodies, lengths = request_bodies(model)
    cases = SEQUENCE_CASES if lengths else CASES
    servers = {name: InferenceServer(model, ServeConfig(
        port=0, runtime="onnxruntime", options=RuntimeOptions(threads=threads), max_queue=1024,
        **knobs)).start() for name, knobs in cases.items()}
    try:
        for server in servers.values():  # warm-up
            pool.submit(load, server.port, bodies, CLIENTS, 2).result()
        per_round: list[dict[str, Any]] = []
        names = list(servers)
        for r in range(rounds):
            row = {}
            for name in names[r % len(names):] + names[:r % len(names)]:
                cpu = thread_cpu(servers[name].batcher)
                row[name] = pool.submit(load, servers[name].port, bodies, CLIENTS,
                                        per_client).result()
                row[name]["batcher_cpu_s"] = thread_cpu(servers[name].batcher) - cpu
                print(f"  {spec} round {r + 1} {name:8s} {row[name]['throughput']:7.1f} req/s",
                      file=sys.stderr, flush=True)
            per_round.append(row)
        metrics = {name: s.snapshot() for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    out = summarise(per_round, metrics, cases)
    if lengths:
        out["tokens_per_request"] = {"min": min(lengths), "median": statistics.median(lengths),
                                     "max": max(lengths)}
    return out


def thread_cpu(batcher: Any) -> float:
    """CPU seconds (user + system) the batcher's thread has used so far (Linux /proc)."""
    tid = batcher._thread.native_id
    try:
        with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_bodies(model: Any) -> tuple[list[bytes], list[int]]:
    """JSON request bodies: tokenized queries for a text model (and their token counts), else
    one random example."""
    if model.tokenizer is not None:
        bodies, lengths = [], []
        for text in QUERIES:
            encoded = model.tokenizer([text], return_tensors="np")
            inputs = {s.name: encoded[s.name].astype(np.int64).tolist() for s in model.inputs}
            bodies.append(json.dumps({"inputs": inputs}).encode())
            lengths.append(int(encoded["input_ids"].shape[1]))
        return bodies, lengths
    shape = model.inputs[0].concrete_shape(1)
    return [json.dumps({"inputs": np.random.default_rng(0).standard_normal(shape)
                        .astype(np.float32).tolist()}).encode()], []


def summarise(per_round: list[dict[str, Any]], metrics: dict[str, Any],
              cases: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in cases:
        lat = np.concatenate([r[name]["latencies_ms"] for r in per_round])
        sizes = {int(k): v for k, v in metrics[name]["batch_sizes"].items()}
        out[name] = {
            "throughput_median": round(statistics.median(r[name]["throughput"]
                                                         for r in per_round), 2),
            "throughput_per_round": [round(r[name]["throughput"], 2) for r in per_round],
            "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 2)
                           for q in (50, 90, 99)},
            "errors": sum(len(r[name]["errors"]) for r in per_round),
            "server_batch_sizes": metrics[name]["batch_sizes"],
            "mean_batch": round(sum(k * v for k, v in sizes.items())
                                / max(sum(sizes.values()), 1), 2),
            "padding_fraction": metrics[name]["padding_fraction"],
            "server_latency_ms": metrics[name]["latency_ms"],
            "over_none_throughput": round(statistics.median(
                r[name]["throughput"] / r["none"]["throughput"] for r in per_round), 3),
            "batcher_cpu_ms_per_request": round(1e3 * sum(r[name]["batcher_cpu_s"]
                                                          for r in per_round)
                                                / sum(r[name]["requests"] for r in per_round), 3),
        }
    for name in cases:
        out[name]["none_over_this_batcher_cpu"] = round(
            out["none"]["batcher_cpu_ms_per_request"]
            / max(out[name]["batcher_cpu_ms_per_request"], 1e-9), 3)
    out["batched_over_none_throughput"] = out["batched"]["over_none_throughput"]
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = ["| model | case | req/s (median) | vs none | p50 ms | p99 ms | mean batch | "
             "padding | model CPU ms/req (gain) | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for spec, r in results.items():
        for name in (n for n in SEQUENCE_CASES if n in r):
            c = r[name]
            lines.append(f"| {spec} | {name} | {c['throughput_median']:.1f} | "
                         f"{c['over_none_throughput']:.2f}x | {c['latency_ms']['p50']:.1f} | "
                         f"{c['latency_ms']['p99']:.1f} | {c['mean_batch']:.1f} | "
                         f"{c['padding_fraction']:.0%} | "
                         f"{c['batcher_cpu_ms_per_request']:.2f} "
                         f"({c['none_over_this_batcher_cpu']:.2f}x) | {c['errors']} |")
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
    from slimkit.bench.environment import environment

    started = time.perf_counter()
    if args.wait_idle > 0:
        wait_until_idle(args.wait_idle)
    load_before = os.getloadavg()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = {spec: bench_model(spec, rounds, per_client, args.threads, pool)
                   for spec in args.models.split(",") if spec}
    payload = {
        "benchmark": f"serve: dynamic batching vs none, {CLIENTS} concurrent clients, "
                     "one example per request (minilm: short queries of varied length), "
                     "ONNX Runtime",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_serve.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "rounds": rounds, "requests_per_client_per_round": per_client,
        "clients": CLIENTS, "cases": SEQUENCE_CASES, "server_threads": args.threads,
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
