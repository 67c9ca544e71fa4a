"""Serving a causal LM: 8 concurrent clients vs one at a time (continuous batching).

``slimkit serve builtin:smollm2`` as a library call: SmolLM2-135M-Instruct from its GGUF file
(dequantized to fp32 by transformers), the PyTorch decode engine, ``--threads`` intra-op
threads (default 1), on loopback. A separate client process drives it with the real
``openai`` client, streaming chat completions (greedy, ``max_tokens`` each) of 8 different
questions:

- ``one-at-a-time``: one client sends the 8 requests one after the other;
- ``concurrent``: 8 clients send one request each at the same moment (``--per-client`` > 1:
  each then sends its next one as soon as the previous finished).

Rounds alternate the two modes. Reported per mode: aggregate completion tokens/s (all tokens
over the wall time of the round; median over rounds), client-side time to first token
(p50/p90/p99 over every request of every round; with 8-16 samples p99 is about the maximum)
and the server's decode batch sizes. ``gain`` = concurrent / one-at-a-time tokens/s (target
>= 3x). On a machine shared with other work wall-clock rates swing between rounds; the CPU
time of the scheduler thread (which runs the model, at 1 thread) per generated token swings
less, and ``cpu_gain`` (its ratio one-at-a-time / concurrent) is the gain wherever the model's
thread is the bottleneck. Also measured in-process, as a reference for the engine's
single-sequence speed: transformers' ``generate`` on the first question (greedy, same
threads).

Batch policy (``slimkit.serve.llm.continuous``): at most ``max_batch`` = 8 sequences decode
together; between two decode steps the scheduler prefills newcomers as one batch of at most
``--max-prefill-tokens`` padded prompt positions (default 512), so a running sequence waits at
most one bounded prefill between two tokens, and a newcomer's first token waits for at most
one decode step plus the prefills ahead of it.

Usage:
    python benchmarks/bench_serve_llm.py            # full run (2 rounds, 64 tokens)
    python benchmarks/bench_serve_llm.py --quick    # smoke run (1 round, 24 tokens)

Writes ``benchmarks/results/serve_llm.json`` (``serve_llm-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import datetime as dt
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
from bench_serve import thread_cpu  # noqa: E402

CLIENTS = 8
QUESTIONS = (  # questions whose answers run past 64 tokens, so most requests hit max_tokens
    "Explain how a bicycle gear system works.",
    "Write a short story about a lighthouse keeper.",
    "What are the main causes of climate change?",
    "Describe the water cycle step by step.",
    "Give me some tips for learning a new language.",
    "How does a computer store data in memory?",
    "What should I pack for a week of hiking in the mountains?",
    "Explain the difference between weather and climate.",
)
REQUEST_TIMEOUT_S = 600.0  # per request; every loop below is bounded in count as well


def drive(url: str, model: str, questions: list[str], clients: int, per_client: int,
          max_tokens: int) -> dict[str, Any]:
    """(In the client process.) ``clients`` threads; client ``i`` streams ``per_client``
    chat completions of ``questions[i], questions[i + clients], ...``; per-request times."""
    import openai

    records: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                          timeout=REQUEST_TIMEOUT_S)
        mine = [one(c, model, questions[(i + k * clients) % len(questions)], max_tokens)
                for k in range(per_client)]
        c.close()
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT_S * per_client)
    wall = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in records)
    return {"seconds": wall, "requests": len(records), "tokens": tokens,
            "tokens_per_s": tokens / wall, "records": records}


def one(client: Any, model: str, question: str, max_tokens: int) -> dict[str, Any]:
    start = time.perf_counter()
    first, tokens, reason, error = None, 0, None, None
    try:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], stream=True,
            max_tokens=max_tokens, temperature=0, stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and first is None:
                first = time.perf_counter() - start
            if chunk.choices and chunk.choices[0].finish_reason:
                reason = chunk.choices[0].finish_reason
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except Exception as exc:  # recorded, not raised: the round goes on
        error = f"{type(exc).__name__}: {exc}"
    return {"ttft_s": first, "seconds": time.perf_counter() - start, "tokens": tokens,
            "finish_reason": reason, "error": error}


def percentiles(values: list[float]) -> dict[str, float | None]:
    a = np.asarray(values) * 1e3
    return {f"p{q}": round(float(np.percentile(a, q)), 1) if a.size else None
            for q in (50, 90, 99)}


def summarise(rounds: list[dict[str, Any]], batch_sizes: dict[str, int]) -> dict[str, Any]:
    records = [r for rnd in rounds for r in rnd["records"]]
    return {"tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rounds), 2),
            "tokens_per_s_rounds": [round(r["tokens_per_s"], 2) for r in rounds],
            "seconds_rounds": [round(r["seconds"], 2) for r in rounds],
            "requests": len(records), "completion_tokens": sum(r["tokens"] for r in records),
            "ttft_ms": percentiles([r["ttft_s"] for r in records if r["ttft_s"] is not None]),
            "finish_reasons": dict(sorted(
                {str(r["finish_reason"]): sum(1 for x in records if x["finish_reason"] ==
                                              r["finish_reason"]) for r in records}.items())),
            "errors": [r["error"] for r in records if r["error"]],
            "decode_batch_sizes": batch_sizes}


def hf_generate_reference(lm: Any, question: str, max_tokens: int, threads: int) -> dict:
    """transformers' generate on one question, greedy, in this process: decode tokens/s."""
    import torch

    tok = lm.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            out = lm.module.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                                     eos_token_id=list(lm.eos_token_ids),
                                     pad_token_id=tok.pad_token_id)
            seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    new = int(out.shape[1] - ids.shape[1])
    return {"tokens": new, "seconds": round(seconds, 2), "tokens_per_s": round(new / seconds, 2)}


def batch_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = sorted(set(after), key=int)
    return {k: after[k] - before.get(k, 0) for k in keys if after[k] - before.get(k, 0)}


def run(args: argparse.Namespace, pool: ProcessPoolExecutor) -> dict[str, Any]:
    from slimkit.serve.llm.config import LLMServeConfig
    from slimkit.serve.llm.load import load_causal_lm
    from slimkit.serve.llm.server import LLMServer

    lm = load_causal_lm("builtin:smollm2")
    config = LLMServeConfig(port=0, max_batch=CLIENTS, threads=args.threads,
                            max_prefill_tokens=args.max_prefill_tokens)
    modes = {"one-at-a-time": (1, CLIENTS * args.per_client),
             "concurrent": (CLIENTS, args.per_client)}
    per_mode: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    sizes: dict[str, dict[str, int]] = {m: {} for m in modes}
    cpu: dict[str, float] = dict.fromkeys(modes, 0.0)
    with LLMServer.for_torch(lm, config) as srv:
        pool.submit(drive, srv.url, srv.name, list(QUESTIONS), 1, 1, 4).result()  # warm-up
        for r in range(args.rounds):
            order = list(modes) if r % 2 == 0 else list(reversed(modes))
            for mode in order:
                clients, per_client = modes[mode]
                before = dict(srv.metrics.snapshot()["batch_sizes"])
                cpu_before = thread_cpu(srv.batcher)
                result = pool.submit(drive, srv.url, srv.name, list(QUESTIONS), clients,
                                     per_client, args.max_tokens).result()
                cpu[mode] += thread_cpu(srv.batcher) - cpu_before
                per_mode[mode].append(result)
                after = srv.metrics.snapshot()["batch_sizes"]
                for k, v in batch_delta(before, after).items():
                    sizes[mode][k] = sizes[mode].get(k, 0) + v
                print(f"  round {r + 1} {mode}: {result['tokens_per_s']:.1f} tok/s "
                      f"({result['tokens']} tokens in {result['seconds']:.1f} s)",
                      file=sys.stderr, flush=True)
        server_metrics = srv.snapshot()
    results = {m: summarise(per_mode[m], sizes[m]) for m in modes}
    for m in modes:
        results[m]["scheduler_cpu_ms_per_token"] = round(
            1e3 * cpu[m] / max(results[m]["completion_tokens"], 1), 2)
    gain = results["concurrent"]["tokens_per_s"] / results["one-at-a-time"]["tokens_per_s"]
    cpu_gain = results["one-at-a-time"]["scheduler_cpu_ms_per_token"] / \
        results["concurrent"]["scheduler_cpu_ms_per_token"]
    return {"modes": results, "gain": round(gain, 2), "target_gain": 3.0,
            "cpu_gain": round(cpu_gain, 2),
            "server": {k: server_metrics[k] for k in ("ttft_ms", "prefill_batches",
                                                      "generated_tokens", "finished_length",
                                                      "finished_stop", "cached_tokens")},
            "transformers_generate_one_question": hf_generate_reference(
                lm, QUESTIONS[0], args.max_tokens, args.threads)}


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [f"SmolLM2-135M (GGUF -> fp32), torch, {args.threads} thread(s), "
             f"{args.max_tokens} max tokens, max batch {CLIENTS}, prefill budget "
             f"{args.max_prefill_tokens}",
             "| mode | tok/s (median) | TTFT p50 / p90 / p99 ms | finish | batch sizes |",
             "|---|---|---|---|---|"]
    for mode, r in result["modes"].items():
        t = r["ttft_ms"]
        lines.append(f"| {mode} | {r['tokens_per_s']:.1f} | {t['p50']} / {t['p90']} / "
                     f"{t['p99']} | {r['finish_reasons']} | {r['decode_batch_sizes']} |")
    ref = result["transformers_generate_one_question"]
    lines.append(f"gain {result['gain']:.2f}x (target >= 3x), in scheduler CPU time per token "
                 f"{result['cpu_gain']:.2f}x; transformers generate, one question: "
                 f"{ref['tokens_per_s']} tok/s incl. prefill")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import multiprocessing

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (indicative only)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the engine")
    p.add_argument("--max-prefill-tokens", type=int, default=512)
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args(argv)
    args.rounds, args.max_tokens, args.per_client = (1, 24, 1) if args.quick else (2, 64, 1)
    output = args.output or RESULTS / ("serve_llm-quick.json" if args.quick
                                       else "serve_llm.json")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from slimkit.bench.environment import environment

    started = time.perf_counter()
    if args.wait_idle > 0:
        wait_until_idle(args.wait_idle)
    load_before = os.getloadavg()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = run(args, pool)
    payload = {
        "benchmark": f"serve_llm: OpenAI API, continuous batching, {CLIENTS} concurrent "
                     "streaming clients vs one at a time, SmolLM2-135M-Instruct (GGUF Q4_1 "
                     "dequantized to fp32), PyTorch engine",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_serve_llm.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "rounds": args.rounds, "max_tokens": args.max_tokens,
        "clients": CLIENTS, "per_client": args.per_client, "threads": args.threads,
        "policy": {"max_batch": CLIENTS, "max_prefill_tokens": args.max_prefill_tokens},
        "questions": list(QUESTIONS),
        "environment": {**environment(), "cpu_detail": cpu_detail()},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "result": result,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(output, payload)
    print(markdown(result, args))
    print(f"wrote {output} in {payload['total_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
