"""``slimkit lowrank``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slimkit.cli.common import load, model_args

HELP = "factorise Linear/Conv2d layers into smaller ones (truncated SVD, Tucker-2)"


L = "lowrank."  # flags of LowRankConfig's fields


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("-o", "--output", required=True,
                   help="folder to write (lowrank-plan.json + model.safetensors)")
    p.add_argument("--rule", dest=L + "rule", default="energy", choices=["energy", "ratio", "rank"],
                   help="how each layer's rank is chosen")
    p.add_argument("--energy", dest=L + "energy",
                   type=float, default=0.9, help="share of energy kept (energy)")
    p.add_argument("--ratio", dest=L + "ratio",
                   type=float, default=0.25, help="share of the full rank (ratio)")
    p.add_argument("--rank", dest=L + "rank", type=int, help="fixed rank (rank)")
    p.add_argument("--conv-method", dest=L + "conv_method",
                   default="channel", choices=["channel", "tucker2"])
    p.add_argument("--layers", dest=L + "layers", action="append", default=[], metavar="RULE",
                   help="layers considered: name:EXACT, re:REGEX or type:OP (repeatable; "
                        "default every Linear and Conv2d)")
    p.add_argument("--exclude", dest=L + "exclude", action="append", default=[], metavar="RULE")
    p.add_argument("--layer-rank", dest=L + "layer_ranks", action="append", default=[],
                   metavar="RULE=RANK", type=_pair,
                   help="fix the rank of matching layers (repeatable)")
    p.add_argument("--min-saving", dest=L + "min_saving", type=float, default=0.0,
                   help="factorise only where MACs drop by more than this fraction")
    p.add_argument("--no-verify", action="store_false", help="skip the ONNX export check",
                   dest=L + "verify")
    p.add_argument("--data", help="data for the fidelity check (synthetic by default)")
    p.add_argument("--scan-sqnr", type=float, metavar="DB",
                   help="choose each layer's rank by a sensitivity scan: the smallest scanned "
                        "rank (1/8, 1/4, 1/2 of full) keeping the output SQNR >= DB when that "
                        "layer alone is factorised; layers that none keeps are left whole")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.common import config_from_args
    from slimkit.cli.console import print_mapping, print_table
    from slimkit.data import load_data
    from slimkit.io import check_output_path
    from slimkit.lowrank import LowRankConfig, low_rank, low_rank_by_scan
    from slimkit.lowrank.config import DEFAULT_LAYERS

    config = config_from_args(LowRankConfig, args, "lowrank",
                              layers=tuple(getattr(args, L + "layers")) or DEFAULT_LAYERS)
    out = Path(args.output)
    check_output_path(out / "lowrank-plan.json" if out.is_dir() else out)  # fail before work
    model = load(args, args.model)
    data = load_data(args.data, model) if args.data else None
    result = (low_rank(model, config, data) if args.scan_sqnr is None
              else low_rank_by_scan(model, config, data, args.scan_sqnr))
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
    rule, sep, rank = text.rpartition("=")
    if not sep or not rule or not rank.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' must be RULE=RANK, e.g. re:fc=16")
    return rule, int(rank)
