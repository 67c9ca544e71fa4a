"""``slimkit prune``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slimkit.cli.common import load, model_args

HELP = "remove channels (a smaller model) or mask weights"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
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


def run(args: argparse.Namespace) -> None:
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
    model = load(args, args.model)
    data = load_data(args.data, model) if args.data else None
    result = prune(model, config, data, measure=args.measure, threads=args.threads)
    folder = result.save(args.output)
    if args.json:
        print(json.dumps(result.sections, indent=2, default=str))
    else:
        print_prune(result.sections, folder)
