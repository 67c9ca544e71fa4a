"""``slimkit generate``."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "generate text with a causal LM, streamed as it comes (torch or ONNX Runtime)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a causal LM: builtin:smollm2, a Hugging Face *ForCausalLM folder, a "
                        ".gguf file, or a generation folder written by 'slimkit export'")
    p.add_argument("--prompt", required=True, help="the prompt ('-' reads it from stdin)")
    p.add_argument("--chat", action="store_true",
                   help="format the prompt as a user message with the model's chat template")
    p.add_argument("--system", help="a system message (with --chat)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="default 128")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 (default) is greedy; above 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    p.add_argument("--runtime", choices=("torch", "onnxruntime"),
                   help="default: torch for a PyTorch model, onnxruntime for a generation folder")
    p.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    p.add_argument("--truncate", action="store_true",
                   help="keep the last tokens of a prompt longer than the context")
    p.add_argument("--json", action="store_true",
                   help="print one JSON result at the end instead of streaming")


def run(args: argparse.Namespace) -> None:
    from slimkit.llm.generate import GenerationConfig, generate
    from slimkit.llm.sampling import SamplingConfig
    from slimkit.load import load_model

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens, chat=args.chat, truncate=args.truncate,
        system=args.system,
        sampling=SamplingConfig(args.temperature, args.top_p, args.top_k, args.seed))
    model = load_model(args.model)
    stream = None if args.json else _write
    result = generate(model, prompt, config, runtime=args.runtime, threads=args.threads,
                      on_text=stream)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    print()
    rate = f", {result.decode_tokens_per_s} tokens/s" if result.decode_tokens_per_s else ""
    cut = " (prompt truncated)" if result.truncated_prompt else ""
    print(f"[{len(result.new_tokens)} tokens, {result.runtime}, first token "
          f"{result.time_to_first_token_s * 1000:.0f} ms{rate}, stop: "
          f"{result.finish_reason}{cut}]", file=sys.stderr)


def _write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()
