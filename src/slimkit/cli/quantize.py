"""``slimkit quantize``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slimkit.cli import quantize_llm, quantize_w8a8
from slimkit.cli.common import load, model_args
from slimkit.cli.quantize_llm import LM_METHODS

HELP = ("int8 (dynamic/static), int4 or fp16; causal LMs: weight-only int4/int8 (RTN, GPTQ, "
        "AWQ, HQQ) or W8A8 (SmoothQuant); verified and measured against float")


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("-o", "--output", required=True, help="the quantized .onnx file to write (a "
                                                         "generation folder for a causal LM)")
    q = "quantize."  # flags of QuantizeConfig's fields
    p.add_argument("--mode", default=argparse.SUPPRESS, dest=q + "mode",  # each config's default
                   choices=["dynamic", "static", "qat", "int4", "int8", "fp16", "w8a8"],
                   help="default dynamic; causal LMs: int4 (default) or int8 weight-only, or "
                        "w8a8 (SmoothQuant + int8 weights + dynamic int8 activations)")
    p.add_argument("--calib", help="calibration data (static mode; training data in qat "
                                   "mode), e.g. builtin:digits:train")
    p.add_argument("--data", help="data to verify on (labels give accuracy); default --calib")
    p.add_argument("--method", default=argparse.SUPPRESS, dest=q + "method",
                   choices=["minmax", "percentile", "entropy", "mse", *LM_METHODS],
                   help="calibration method (static mode; default minmax); causal LMs: rtn "
                        "(default), gptq, awq, hqq or gguf")
    p.add_argument("--per-tensor", action="store_false", dest=q + "per_channel",
                   help="one weight scale per tensor (default: per output channel)")
    p.add_argument("--activation-type", default="auto", choices=["auto", "u8", "s8"],
                   dest=q + "activation_type",
                   help="auto picks the fast integer path of this CPU (u8 on x86)")
    p.add_argument("--symmetric-activations", action="store_true",
                   dest=q + "symmetric_activations")
    p.add_argument("--exclude", action="append", default=[], metavar="RULE", dest=q + "exclude",
                   help="keep layers in float: name:EXACT, re:REGEX or type:OP (repeatable)")
    p.add_argument("--calibration-size", type=int, default=128, dest=q + "calibration_size")
    p.add_argument("--block-size", type=int, default=argparse.SUPPRESS, dest=q + "block_size",
                   help="int4 block size (default 32)")
    p.add_argument("--no-fuse", action="store_false", dest=q + "fuse_transformer",
                   help="skip ONNX Runtime's transformer fusion / pre-processing")
    p.add_argument("--max-drop", type=float, dest=q + "max_drop",
                   help="largest metric drop allowed; layers are reverted to float until it "
                        "holds (exit code 5 if it cannot, with the best model written)")
    p.add_argument("--relative", action="store_true", help="--max-drop is relative",
                   dest=q + "relative_drop")
    p.add_argument("--metric", help="user metric package.module:function(outputs, labels)")
    p.add_argument("--qat-epochs", type=int, default=2, help="fine-tuning epochs (qat mode)",
                   dest=q + "qat_epochs")
    p.add_argument("--qat-lr", type=float, default=1e-4, help="learning rate (qat mode)",
                   dest=q + "qat_lr")
    p.add_argument("--learn-scales", action="store_true", dest=q + "learn_scales",
                   help="learn activation scales during QAT (LSQ)")
    p.add_argument("--smooth", type=float, metavar="ALPHA", dest=q + "smooth_alpha",
                   help="SmoothQuant rebalancing of LayerNorm -> Linear pairs (e.g. 0.5), "
                        "applied where exact")
    p.add_argument("--no-outlier-aware", action="store_false", dest=q + "outlier_aware",
                   help="transformer encoders: skip the exact graph SmoothQuant and the FFN "
                        "outlier-channel split (on by default)")
    p.add_argument("--outlier-channels", type=int, default=8, dest=q + "outlier_channels",
                   help="FFN hidden channels given their own int8 range (default 8; 0: none)")
    p.add_argument("--equalize", default="auto", choices=["auto", "on", "off"],
                   dest=q + "equalize",
                   help="cross-layer equalization + bias correction of torch CNNs (static "
                        "mode); auto: tried on depthwise pairs, kept when it scores better")
    p.add_argument("--target", default="onnxruntime", choices=["onnxruntime", "openvino"],
                   help="the runtime the int8 model is for: onnxruntime (an .onnx file) or "
                        "openvino (IR .xml + .bin, made with NNCF; needs slimkit[openvino])")
    p.add_argument("--threads", type=int, default=1, help="threads for the speed measurement")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    quantize_llm.add_arguments(p)
    quantize_w8a8.add_arguments(p)


BUDGET_NOT_MET = 5  # distinct from errors: a model was written, but the budget does not hold


def run(args: argparse.Namespace) -> int:
    from slimkit.cli.common import config_from_args
    from slimkit.cli.console import print_quantize
    from slimkit.cli.llm import is_causal_lm_spec
    from slimkit.data import load_data
    from slimkit.evaluate.metrics import load_user_metric
    from slimkit.io import check_output_path, write_text_atomic
    from slimkit.quantize import QuantizeConfig, quantize

    if getattr(args, "quantize.mode", None) == quantize_w8a8.MODE:
        return quantize_w8a8.run(args)
    if is_causal_lm_spec(args.model):
        return quantize_llm.run(args)
    config = config_from_args(QuantizeConfig, args, "quantize")
    report_path = Path(str(args.output) + ".report.json")
    check_output_path(args.output)
    model = load(args, args.model)
    calib = load_data(args.calib, model, split="train") if args.calib else None
    data = load_data(args.data, model) if args.data else None
    metric = load_user_metric(args.metric) if args.metric else None
    if args.target == "openvino":
        from slimkit.quantize.openvino_target import quantize_openvino

        report = quantize_openvino(model, args.output, config, calib, data, args.threads)
        write_text_atomic(report_path, json.dumps(report, indent=2, default=str) + "\n")
        print(json.dumps(report, indent=2, default=str) if args.json else
              f"wrote {report['path']}: int8 proven={report['proof']['ok']}, precision "
              f"{report['precision']['chosen']}; report {report_path}")
        return 0
    result = quantize(model, args.output, config, calib, data, metric, args.threads)
    report = result.to_dict()
    write_text_atomic(report_path, json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_quantize(report, report_path)
    return BUDGET_NOT_MET if result.met_budget is False else 0
