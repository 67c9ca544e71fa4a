"""``slimkit analyze``."""

from __future__ import annotations

import argparse
import json

from slimkit.cli.common import load, model_args

HELP = "parameters, MACs and measured time by layer/op type"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--sequence", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace) -> None:
    from slimkit.analyse.profile import analyze
    from slimkit.console import print_analysis

    model = load(args, args.model)
    data = analyze(model, args.batch, args.sequence, args.threads).to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_analysis(data)
