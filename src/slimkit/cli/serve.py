"""``slimkit serve``."""

from __future__ import annotations

import argparse
from typing import TypeVar

from slimkit.cli.common import load, model_args

T = TypeVar("T")

HELP = ("serve a model over HTTP: tensor models with dynamic batching (POST /predict, the Open "
        "Inference Protocol v2 under /v2), causal LMs (a Hugging Face folder, a .gguf file, "
        "builtin:smollm2) with OpenAI's API (/v1/chat/completions, /v1/completions) and "
        "continuous batching; /health, /metrics")


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    p.add_argument("--runtime", default="onnxruntime",
                   help="torch, torch-compile or onnxruntime (default onnxruntime)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the session")
    p.add_argument("--config", help="a runtime config from `slimkit tune` (runtime, options; "
                                    "its batch size becomes --max-batch)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="examples per forward pass at most (1: no batching; default 32); for "
                        "a causal LM, sequences decoding together (default 16)")
    p.add_argument("--max-prefill-tokens", type=int, default=512,
                   help="causal LM: padded prompt tokens prefilled between two decode steps "
                        "(bounds the stall of running generations; default 512)")
    p.add_argument("--model-name", help="causal LM: the model id clients send (default: the "
                                        "folder or file name, smollm2 for builtin:smollm2)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more requests (0: no batching)")
    p.add_argument("--max-padding", type=float, default=0.0,
                   help="for models with an attention_mask: requests of different lengths "
                        "share a batch padded to the longest while padding stays under this "
                        "share of its positions (default 0: only equal lengths batch)")
    p.add_argument("--max-queue", type=int, default=None,
                   help="requests waiting at most; beyond, 503 (default 256; 64 for a causal "
                        "LM)")
    p.add_argument("--max-body-mb", type=float, default=16.0,
                   help="request body limit in MiB; beyond, 413 (default 16)")
    p.add_argument("--request-timeout", type=float, default=None,
                   help="seconds a request may wait for its result (causal LM: for its next "
                        "token); beyond, 504 (default 30; 60 for a causal LM)")


def run(args: argparse.Namespace) -> None:
    from slimkit.runtime import RuntimeOptions
    from slimkit.runtime.config import RuntimeConfig
    from slimkit.serve import InferenceServer, ServeConfig
    from slimkit.serve.llm.load import is_causal_lm

    if is_causal_lm(args.model):
        return run_llm(args)
    runtime, options, max_batch = args.runtime, RuntimeOptions(threads=args.threads), \
        _or(args.max_batch, 32)
    if args.config:
        tuned = RuntimeConfig.load(args.config)
        runtime, options, max_batch = tuned.runtime, tuned.options, max(tuned.batch, 1)
    config = ServeConfig(host=args.host, port=args.port, max_batch=max_batch,
                         max_wait_ms=args.max_wait_ms, max_queue=_or(args.max_queue, 256),
                         max_body_bytes=int(args.max_body_mb * 2**20),
                         request_timeout_s=_or(args.request_timeout, 30.0), runtime=runtime,
                         options=options, max_padding=args.max_padding)
    server = InferenceServer(load(args, args.model), config)
    padded = f", padding {', '.join(n for n, _ in server.padding.inputs)}" \
        if server.padding is not None else ""
    print(f"serving {server.model.name} on {server.url} ({runtime}, max batch "
          f"{config.max_batch if config.batching else 1}{padded}); Ctrl-C or SIGTERM stops",
          flush=True)
    server.serve_until_signal()
    print("stopped: every request in flight was answered", flush=True)


def _or(value: T | None, default: T) -> T:
    """A flag's value, or its default for this kind of model when not given."""
    return default if value is None else value


def run_llm(args: argparse.Namespace) -> None:
    from slimkit.serve.llm.config import LLMServeConfig
    from slimkit.serve.llm.load import load_causal_lm
    from slimkit.serve.llm.server import LLMServer

    config = LLMServeConfig(host=args.host, port=args.port, max_batch=_or(args.max_batch, 16),
                            max_prefill_tokens=args.max_prefill_tokens,
                            max_queue=_or(args.max_queue, 64),
                            max_body_bytes=int(args.max_body_mb * 2**20),
                            request_timeout_s=_or(args.request_timeout, 60.0),
                            threads=args.threads, model_name=args.model_name)
    server = LLMServer.for_lm(load_causal_lm(args.model), config)
    print(f"serving {server.name} on {server.url} (OpenAI API at {server.url}/v1, torch, "
          f"{config.threads} thread(s), up to {config.max_batch} sequences batched); Ctrl-C or "
          "SIGTERM stops", flush=True)
    server.serve_until_signal()
    print("stopped: every generation in flight was answered", flush=True)
