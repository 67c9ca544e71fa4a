"""``slimkit perplexity``."""

from __future__ import annotations

import argparse
import json

HELP = "perplexity of a causal LM on real text (and KL, top-1 agreement vs --reference)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a causal LM (builtin:smollm2, an HF folder, a .gguf file, or a "
                        "generation folder from 'slimkit export')")
    p.add_argument("--text", default="builtin:python-reference:evaluation",
                   help="a UTF-8 .txt file or builtin:python-reference[:evaluation|calibration]"
                        " (the Python Language Reference prose shipped with Python; default: "
                        "its evaluation part)")
    p.add_argument("--reference", help="the model to compare with (e.g. the original)")
    p.add_argument("--runtime", choices=("torch", "onnxruntime"),
                   help="runtime of MODEL (default: follows the model)")
    p.add_argument("--window", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--stride", type=int, default=512,
                   help="tokens between window starts (default 512: disjoint windows)")
    p.add_argument("--max-tokens", type=int, default=4096,
                   help="score the text's first N tokens (default 4096)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.console import print_mapping
    from slimkit.llm.evaluate import PerplexityConfig, compare
    from slimkit.load import load_model

    config = PerplexityConfig(args.text, args.window, args.stride, args.max_tokens)
    model = load_model(args.model)
    reference = load_model(args.reference) if args.reference else None
    result = compare(model, reference, config, runtime=args.runtime, threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    text = result.pop("text")
    result["text"] = f"{text['source']}" + (f" ({text['split']})" if "split" in text else "")
    print_mapping(f"{model.name}: perplexity ({result['runtime']})", result)
