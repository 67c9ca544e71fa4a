"""``slimkit export``."""

from __future__ import annotations

import argparse

from slimkit.cli.common import load, model_args

HELP = "export to ONNX and verify it in ONNX Runtime"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("-o", "--output", required=True,
                   help="the .onnx file to write, an OpenVINO IR .xml (with its .bin), or for a "
                        "causal LM the generation folder (ONNX with a KV cache + "
                        "genai_config.json, runs in onnxruntime-genai)")
    p.add_argument("--data", help="inputs to verify on (default: synthetic from the model)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--atol", type=float, default=1e-4, help="max abs difference allowed")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative difference allowed")


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.console import console
    from slimkit.cli.llm import export_causal_lm, is_causal_lm_spec
    from slimkit.data import load_data
    from slimkit.export.onnx import ExportConfig, export_onnx
    from slimkit.io import check_output_path

    if is_causal_lm_spec(args.model):
        return export_causal_lm(args)
    check_output_path(args.output)  # fail before loading a large model
    config = ExportConfig(opset=args.opset, atol=args.atol, rtol=args.rtol)
    model = load(args, args.model)
    verify_on = args.data or args.sample_inputs
    sample = load_data(verify_on, model) if verify_on else None
    if str(args.output).endswith(".xml"):
        from slimkit.export.openvino import export_openvino

        ir = export_openvino(model, args.output, sample)
        console.print(f"wrote {ir.path} (+ .bin); verified in OpenVINO (f32) against ONNX "
                      f"Runtime: max abs diff {ir.max_abs_diff:.3g}")
        return
    result = export_onnx(model, args.output, config, sample)
    console.print(f"wrote {result.path} (opset {result.opset}); verified in ONNX Runtime on "
                  f"{result.verified_shapes}: max abs diff {result.max_abs_diff:.3g} "
                  f"<= atol {result.atol:g}")
