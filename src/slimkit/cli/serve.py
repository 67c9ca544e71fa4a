"""``slimkit serve``."""

from __future__ import annotations

import argparse

from slimkit.cli.common import load, model_args

HELP = "serve a model over HTTP with dynamic batching (POST /predict, /health, /metrics)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    p.add_argument("--runtime", default="onnxruntime",
                   help="torch, torch-compile or onnxruntime (default onnxruntime)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the session")
    p.add_argument("--config", help="a runtime config from `slimkit tune` (runtime, options; "
                                    "its batch size becomes --max-batch)")
    p.add_argument("--max-batch", type=int, default=32,
                   help="examples per forward pass at most (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more requests (0: no batching)")
    p.add_argument("--max-padding", type=float, default=0.0,
                   help="for models with an attention_mask: requests of different lengths "
                        "share a batch padded to the longest while padding stays under this "
                        "share of its positions (default 0: only equal lengths batch)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="requests waiting at most; beyond, 503 (default 256)")
    p.add_argument("--max-body-mb", type=float, default=16.0,
                   help="request body limit in MiB; beyond, 413 (default 16)")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="seconds a request may wait for its result; beyond, 504")


def run(args: argparse.Namespace) -> None:
    from slimkit.runtime import RuntimeOptions
    from slimkit.runtime.config import RuntimeConfig
    from slimkit.serve import InferenceServer, ServeConfig

    runtime, options, max_batch = args.runtime, RuntimeOptions(threads=args.threads), \
        args.max_batch
    if args.config:
        tuned = RuntimeConfig.load(args.config)
        runtime, options, max_batch = tuned.runtime, tuned.options, max(tuned.batch, 1)
    config = ServeConfig(host=args.host, port=args.port, max_batch=max_batch,
                         max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                         max_body_bytes=int(args.max_body_mb * 2**20),
                         request_timeout_s=args.request_timeout, runtime=runtime,
                         options=options, max_padding=args.max_padding)
    server = InferenceServer(load(args, args.model), config)
    padded = f", padding {', '.join(n for n, _ in server.padding.inputs)}" \
        if server.padding is not None else ""
    print(f"serving {server.model.name} on {server.url} ({runtime}, max batch "
          f"{config.max_batch if config.batching else 1}{padded}); Ctrl-C or SIGTERM stops",
          flush=True)
    server.serve_until_signal()
    print("stopped: every request in flight was answered", flush=True)
