"""``slimkit analyze``."""

from __future__ import annotations

import argparse
import json

from slimkit.cli.common import load, model_args

HELP = "parameters, MACs and measured time by layer/op type; --advise: what will pay here"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--sequence", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--advise", action="store_true",
                   help="recommend compression techniques for this model on this CPU, each "
                        "with a predicted speed-up from the measurements")
    p.add_argument("--verify", action="store_true",
                   help="with --advise: try each technique quickly and measure its speed-up "
                        "(minutes on large models)")
    p.add_argument("--ratio", type=float, default=0.5, help="share removed by pruning trials")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", help="with --advise: write the advice as JSON "
                                          "(advice.json in a run folder joins 'slimkit report')")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace) -> None:
    if args.verify and not args.advise:
        from slimkit.errors import InputError

        raise InputError("--verify needs --advise (it measures the advised techniques)")
    model = load(args, args.model)
    if args.advise:
        _advise(args, model)
        return
    from slimkit.analyse.profile import analyze
    from slimkit.cli.console import print_analysis

    data = analyze(model, args.batch, args.sequence, args.threads).to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_analysis(data)


def _advise(args: argparse.Namespace, model: object) -> None:
    from slimkit.advise.api import AdviseConfig, advise
    from slimkit.cli.console import print_advice
    from slimkit.io import check_output_path, write_text_atomic

    config = AdviseConfig(verify=args.verify, threads=args.threads, batch=args.batch,
                          sequence=args.sequence, ratio=args.ratio, seed=args.seed)
    if args.output:
        check_output_path(args.output)
    data = advise(model, config=config).to_dict()  # type: ignore[arg-type]
    text = json.dumps(data, indent=2, allow_nan=False)
    if args.output:
        write_text_atomic(args.output, text + "\n")
    if args.json:
        print(text)
    else:
        print_advice(data, args.output)
