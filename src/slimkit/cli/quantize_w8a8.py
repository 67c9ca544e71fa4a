"""``slimkit quantize MODEL --mode w8a8`` for causal LMs (not a command itself): the W8A8 flags,
each mapped onto one field of :class:`slimkit.llm.w8a8.W8A8Config`, and the call."""

from __future__ import annotations

import argparse
import json
from typing import Any

from slimkit.cli.quantize_llm import LM_HEAD

MODE = "w8a8"
BUDGET_NOT_MET = 5  # as 'slimkit quantize': a model was written, but the budget does not hold


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "causal LMs, --mode w8a8", "SmoothQuant + int8 weights + dynamic int8 activations; "
        "-o is a generation folder; --calib is text (default: the calibration part of "
        "builtin:python-reference); --threads times the model")
    w = "w8a8."
    g.add_argument("--smoothing", default="per-layer", dest=w + "smoothing",
                   choices=["per-layer", "global", "fixed", "off"],
                   help="SmoothQuant alpha: per layer or one global, chosen by measured error "
                        "(default per-layer); fixed uses --alpha")
    g.add_argument("--alpha", type=float, default=0.5, metavar="ALPHA", dest=w + "alpha",
                   help="alpha of --smoothing fixed (default 0.5)")
    g.add_argument("--activations", default="token", choices=["token", "tensor"],
                   dest=w + "activations",
                   help="dynamic int8 activations per token (default) or per tensor")
    g.add_argument("--keep-float", action="append", default=[], metavar="RULE",
                   dest=w + "keep_float", help="decoder layers kept float, e.g. "
                   "name:layers.1.mlp.down_proj or re:down_proj (repeatable)")
    g.add_argument("--kv-cache", default="float", choices=["float", "int8"],
                   dest=w + "kv_cache", help="KV cache precision (default float)")
    g.add_argument("--max-ppl-increase", type=float, metavar="FRACTION",
                   dest=w + "max_ppl_increase",
                   help="largest relative perplexity increase, e.g. 0.03; sensitive layers are "
                        "kept float until it holds (exit code 5 if it cannot)")
    g.add_argument("--max-perplexity", type=float, metavar="PPL", dest=w + "max_perplexity",
                   help="absolute perplexity budget on the evaluation text")
    g.add_argument("--eval-tokens", type=int, default=4096, metavar="N",
                   help="held-out tokens scored for perplexity/KL (default 4096)")
    g.add_argument("--no-speed", action="store_true",
                   help="skip the side-by-side speed measurement")


def run(args: argparse.Namespace) -> int:
    from slimkit.cli.common import config_from_args
    from slimkit.cli.console import print_mapping
    from slimkit.cli.llm import is_causal_lm_spec
    from slimkit.errors import InputError
    from slimkit.llm.evaluate import PerplexityConfig
    from slimkit.llm.w8a8 import SpeedConfig, W8A8Config, quantize_w8a8
    from slimkit.llm.w8a8.api import REPORT_FILE
    from slimkit.llm.w8a8.config import CALIBRATION_TEXT
    from slimkit.load import load_model

    if not is_causal_lm_spec(args.model):
        raise InputError(f"--mode w8a8 is for causal LMs; '{args.model}' is not one (use "
                         "--mode dynamic or static for other models)")
    head = getattr(args, LM_HEAD, "int8")
    if head == "int4":
        raise InputError("--mode w8a8 keeps the LM head as int8 (weight-only) or fp32, not int4")
    window = min(512, args.eval_tokens)
    config = config_from_args(
        W8A8Config, args, "w8a8", lm_head="float" if head == "fp32" else head,
        evaluation=PerplexityConfig(window=window, stride=window, max_tokens=args.eval_tokens),
        speed=None if args.no_speed else SpeedConfig(threads=args.threads))
    result = quantize_w8a8(load_model(args.model), args.output, config,
                           calib=args.calib or CALIBRATION_TEXT)
    if args.json:
        print(json.dumps(result.report, indent=2, default=str))
    else:
        print_mapping(f"wrote {result.folder} (W8A8; report {REPORT_FILE} inside)",
                      summary(result.report))
    return BUDGET_NOT_MET if result.met_budget is False else 0


def summary(report: dict[str, Any]) -> dict[str, object]:
    """The few numbers a person reads first."""
    graph, fidelity = report["graph"], report["fidelity"]
    out: dict[str, object] = {
        "int8 layers": f"{graph['layers']['int8']} "
                       f"({', '.join(graph['integer_kernels']['kernel'])})",
        "kept float": ", ".join(graph["layers"]["kept_float"]) or "none",
        "smoothed sites": f"{report['smoothing'].get('smoothed', 0)} of "
                          f"{len(report['smoothing']['sites'])}",
        "perplexity": f"{fidelity['perplexity']:.3f} vs {fidelity['reference_perplexity']:.3f} "
                      f"({100 * fidelity['perplexity_change']:+.2f}%)",
        "KL mean / top-1": f"{fidelity['kl_mean']:.4f} / {fidelity['top1_agreement']:.3f}",
        "size MB": graph["size_mb"]}
    rows = report.get("speed", {}).get("rows", {})
    for name, row in rows.items():
        out[f"{name}"] = f"prefill {row['prefill_ms']} ms, decode {row['decode_tok_s']} tok/s"
    return out
