"""``slimkit quantize`` of a causal LM: weight-only int4/int8 to MatMulNBits (not a command
itself: ``slimkit.cli.quantize`` hands causal LMs here)."""

from __future__ import annotations

import argparse
import json

LM_METHODS = ("rtn", "gptq", "awq", "hqq", "gguf")
SHARED = ("mode", "method", "block_size")  # flags of QuantizeConfig that mean the same here
LM_HEAD = "wquant.lm_head"  # one --lm-head flag for both LM modes (W8A8 reads it too)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags only causal LMs take (dest ``wquant.FIELD`` / ``wquant_advanced.FIELD``)."""
    g = p.add_argument_group(
        "causal LMs (weight-only MatMulNBits; --mode int4|int8, --method rtn|gptq|awq|hqq|gguf, "
        "--block-size 16-256, --calib TEXT: the calibration text of gptq/awq)")
    w, a = "wquant.", "wquant_advanced."
    g.add_argument("--asymmetric", action="store_const", const=False, dest=w + "symmetric",
                   default=argparse.SUPPRESS, help="a zero point per block (default: symmetric, "
                                                   "except hqq)")
    g.add_argument("--lm-head", choices=("int8", "int4", "fp32"), dest=LM_HEAD,
                   default=argparse.SUPPRESS,
                   help="precision of the LM head (default int8; --mode w8a8: int8 or fp32)")
    g.add_argument("--embeddings", choices=("int8", "int4", "fp32"), dest=w + "embeddings",
                   default=argparse.SUPPRESS,
                   help="precision of the token embedding (default int8; shared with a tied "
                        "head when both land on the same grid)")
    g.add_argument("--keep-8bit", type=float, metavar="FRACTION", dest=w + "keep_8bit",
                   default=argparse.SUPPRESS,
                   help="int4 mode: keep this fraction of the layer weights at 8 bits, the "
                        "layers with the largest measured 4-bit error (e.g. 0.1)")
    g.add_argument("--accuracy-level", choices=("auto", "0", "1", "2", "3", "4"),
                   dest=w + "accuracy_level", default=argparse.SUPPRESS,
                   help="MatMulNBits compute: auto (default) times fp32 (1) against int8 (4) "
                        "activations on this CPU and keeps the faster")
    g.add_argument("--float-zero-points", action="store_true", default=argparse.SUPPRESS,
                   dest=a + "float_zero_points",
                   help="gguf/hqq: float zero points (exact Q4_1, but ONNX Runtime's CPU kernel "
                        "is then much slower)")
    g.add_argument("--calibration-windows", type=int, default=argparse.SUPPRESS,
                   dest=a + "calibration_windows", metavar="N",
                   help="windows of 512 tokens (default 16)")
    g.add_argument("--ppl-windows", type=int, default=argparse.SUPPRESS, dest=a + "ppl_windows",
                   metavar="N",
                   help="evaluation windows of 512 tokens for perplexity/KL (default 8)")
    g.add_argument("--speed-rounds", type=int, default=argparse.SUPPRESS,
                   dest=a + "speed_rounds", metavar="N",
                   help="timed rounds against fp32 (default 3; 0 skips)")


def run(args: argparse.Namespace) -> int:
    from slimkit.cli.common import config_from_args
    from slimkit.cli.console import console
    from slimkit.errors import InputError
    from slimkit.llm.wquant import AdvancedWeightQuantConfig, WeightQuantConfig, quantize_weights
    from slimkit.load import load_model

    if getattr(args, "quantize.exclude", None) or args.target != "onnxruntime":
        raise InputError("--exclude and --target do not apply to a causal LM's weight-only "
                         "quantization (use --keep-8bit, --lm-head, --embeddings)")
    shared = {k: getattr(args, f"quantize.{k}") for k in SHARED if hasattr(args, f"quantize.{k}")}
    advanced = config_from_args(AdvancedWeightQuantConfig, args, "wquant_advanced")
    config = config_from_args(WeightQuantConfig, args, "wquant", **shared, advanced=advanced,
                              threads=args.threads)
    result = quantize_weights(load_model(args.model), args.output, config, args.calib)
    report = result.report
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    console.print(summary(report, str(result.folder)))
    return 0


def summary(report: dict, folder: str) -> str:
    """A few lines: what was written, fidelity against fp32, speed side by side, size."""
    c, q = report["config"], report["quality"]
    lines = [f"wrote {folder} (MatMulNBits {c['mode']}, {c['method']}, block {c['block_size']}; "
             f"runs in onnxruntime-genai); report {folder}/slimkit_wquant.json",
             f"perplexity {q['perplexity']:.3f} vs fp32 {q['reference_perplexity']:.3f} "
             f"({100 * q['perplexity_change']:+.2f}%), KL {q['kl_mean']:.4f}, top-1 agreement "
             f"{q['top1_agreement']:.3f}",
             f"size {report['size']['quantized_bytes'] / 1e6:.1f} MB "
             f"({report['size']['ratio']}x smaller than fp32), accuracy level "
             f"{report['accuracy_level']['chosen']}"]
    speed = report.get("speed")
    if speed:
        lines.append(f"decode {speed['quantized']['decode_tok_s']} tok/s vs fp32 "
                     f"{speed['fp32']['decode_tok_s']} ({speed['decode_speedup']}x); prefill "
                     f"{speed['quantized']['prefill_ms']} ms vs {speed['fp32']['prefill_ms']} ms "
                     f"({speed['threads']} thread(s))")
    return "\n".join(lines)
