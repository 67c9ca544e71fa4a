"""``slimkit diff``."""

from __future__ import annotations

import argparse
import json

from slimkit.cli.common import signature_args

HELP = "what changed between an original and a compressed model (agreement, flips, layers)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("original", metavar="ORIGINAL", help="the original model spec")
    p.add_argument("compressed", metavar="COMPRESSED", help="the compressed model spec")
    p.add_argument("--data", required=True, help="examples to compare on (labels: per class)")
    p.add_argument("--weights", help="weights (.safetensors or .pt/.pth) for a factory spec")
    signature_args(p)
    p.add_argument("--max-flipped", type=int, default=20, help="flipped examples to list")
    p.add_argument("--neighbours", type=int, default=5, help="k nearest neighbours (encoders)")
    p.add_argument("--no-layers", action="store_true", help="skip the per-layer SQNR")
    p.add_argument("-o", "--output", help="write the diff as JSON (diff.json in a run folder "
                                          "becomes a section of 'slimkit report')")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.common import load
    from slimkit.cli.console import print_diff
    from slimkit.data import load_data
    from slimkit.evaluate.diff import behaviour_diff
    from slimkit.io import check_output_path, write_text_atomic

    if args.output:
        check_output_path(args.output)  # fail before the work
    original, compressed = load(args, args.original), load(args, args.compressed)
    data = load_data(args.data, original)
    result = behaviour_diff(original, compressed, data, max_flipped=args.max_flipped,
                            k=args.neighbours, layers=not args.no_layers).to_dict()
    text = json.dumps(result, indent=2, allow_nan=False, default=str)
    if args.output:
        write_text_atomic(args.output, text + "\n")
    if args.json:
        print(text)
    else:
        print_diff(result, args.output)
