"""``slimkit lowrank``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slimkit.cli.common import load, model_args

HELP = "factorise Linear/Conv2d layers into smaller ones (truncated SVD, Tucker-2)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("-o", "--output", required=True,
                   help="folder to write (lowrank-plan.json + model.safetensors)")
    p.add_argument("--rule", default="energy", choices=["energy", "ratio", "rank"],
                   help="how each layer's rank is chosen")
    p.add_argument("--energy", type=float, default=0.9, help="share of energy kept (energy)")
    p.add_argument("--ratio", type=float, default=0.25, help="share of the full rank (ratio)")
    p.add_argument("--rank", type=int, help="fixed rank (rank)")
    p.add_argument("--conv-method", default="channel", choices=["channel", "tucker2"])
    p.add_argument("--layers", action="append", default=[], metavar="RULE",
                   help="layers considered: name:EXACT, re:REGEX or type:OP (repeatable; "
                        "default every Linear and Conv2d)")
    p.add_argument("--exclude", action="append", default=[], metavar="RULE")
    p.add_argument("--layer-rank", action="append", default=[], metavar="RULE=RANK",
                   help="fix the rank of matching layers (repeatable)")
    p.add_argument("--min-saving", type=float, default=0.0,
                   help="factorise only where MACs drop by more than this fraction")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX export check")
    p.add_argument("--data", help="data for the fidelity check (synthetic by default)")
    p.add_argument("--scan-sqnr", type=float, metavar="DB",
                   help="choose each layer's rank by a sensitivity scan: the smallest scanned "
                        "rank (1/8, 1/4, 1/2 of full) keeping the output SQNR >= DB when that "
                        "layer alone is factorised; layers that none keeps are left whole")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.console import print_mapping, print_table
    from slimkit.data import load_data
    from slimkit.io import check_output_path
    from slimkit.lowrank import LowRankConfig, low_rank
    from slimkit.lowrank.config import DEFAULT_LAYERS

    config = LowRankConfig(rule=args.rule, energy=args.energy, ratio=args.ratio,
                           rank=args.rank, conv_method=args.conv_method,
                           layers=tuple(args.layers) or DEFAULT_LAYERS,
                           exclude=tuple(args.exclude),
                           layer_ranks=tuple(_pair(t) for t in args.layer_rank),
                           min_saving=args.min_saving, verify=not args.no_verify)
    out = Path(args.output)
    check_output_path(out / "lowrank-plan.json" if out.is_dir() else out)  # fail before work
    model = load(args, args.model)
    data = load_data(args.data, model) if args.data else None
    if args.scan_sqnr is not None:
        from slimkit.data import synthetic
        from slimkit.lowrank import rank_scan

        scan_data = data.take(64) if data is not None else synthetic(model.inputs, 16, seed=1)
        config = rank_scan(model, scan_data, config).config_for(config, args.scan_sqnr)
    result = low_rank(model, config, data)
    folder = result.save(out)
    s = result.sections
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return
    print_table(f"factorised layers of {model.name}", s["layers"],
                ["name", "kind", "ranks", "max_ranks", "energy", "macs_before", "macs_after"])
    print_mapping(f"low-rank model -> {folder}", {**s["size"], **s["fidelity"],
                                                  "skipped layers": len(s["skipped"])})


def _pair(text: str) -> tuple[str, int]:
    from slimkit.errors import InputError

    rule, sep, rank = text.rpartition("=")
    if not sep or not rule or not rank.isdigit():
        raise InputError(f"--layer-rank '{text}' must be RULE=RANK, e.g. re:fc=16")
    return rule, int(rank)
