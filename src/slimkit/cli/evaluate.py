"""``slimkit evaluate``."""

from __future__ import annotations

import argparse
import json

from slimkit.cli.common import load, model_args

HELP = "task metrics and fidelity to a reference model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("--data", required=True, help="data spec (see 'slimkit --help')")
    p.add_argument("--reference", help="reference model to compare outputs with")
    p.add_argument("--metric", help="user metric package.module:function(outputs, labels)")
    p.add_argument("--runtime", default=None,
                   help="torch or onnxruntime (default: torch for torch models)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.console import print_mapping
    from slimkit.data import load_data
    from slimkit.evaluate.metrics import evaluate, load_user_metric
    from slimkit.load import load_model

    model = load(args, args.model)
    reference = load_model(args.reference) if args.reference else None
    metric = load_user_metric(args.metric) if args.metric else None
    runtime = args.runtime or ("torch" if model.module is not None else "onnxruntime")
    result = evaluate(model, load_data(args.data, model), reference, runtime=runtime,
                      metric=metric)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_mapping(f"{model.name} on {args.data} ({runtime})", result)
