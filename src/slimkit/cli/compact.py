"""``slimkit compact``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slimkit.cli.common import csv, load, model_args

HELP = "Deep Compression: prune, cluster and entropy-code into a .slim file (verified)"


D = "compact."  # flags of DeepCompressConfig's fields


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("-o", "--output", required=True, help="the .slim file to write")
    p.add_argument("--data", default="builtin:digits:train",
                   help="labelled training data for the fine-tuning stages")
    p.add_argument("--eval-data", help="labelled held-out data for the accuracies "
                                       "(default: --data)")
    p.add_argument("--pack-only", action="store_true",
                   help="no pruning or clustering: write the model as it is (lossless)")
    p.add_argument("--sparsity", dest=D + "sparsity",
                   type=float, default=0.9, help="share of weights pruned")
    p.add_argument("--prune-scope", dest=D + "prune_scope",
                   default="global", choices=["layer", "global"])
    p.add_argument("--prune-epochs", dest=D + "prune_epochs", type=int, default=30)
    p.add_argument("--clusters", dest=D + "clusters",
                   type=int, default=16, help="centroids per codebook (2..256)")
    p.add_argument("--init", dest=D + "init",
                   default="linear", choices=["linear", "density", "kmeans++"])
    p.add_argument("--granularity", dest=D + "granularity",
                   default="layer", choices=["layer", "channel"])
    p.add_argument("--cluster-epochs", dest=D + "cluster_epochs", type=int, default=10)
    p.add_argument("--lr", dest=D + "lr", type=float, default=1e-3)
    p.add_argument("--cluster-lr", dest=D + "cluster_lr", type=float, default=1e-4)
    p.add_argument("--no-half", action="store_false", dest=D + "half_precision",
                   help="keep biases, norms and codebooks float32")
    p.add_argument("--exclude", dest=D + "exclude", action="append", default=[], metavar="RULE",
                   help="layers left alone: name:EXACT, re:REGEX or type:OP (repeatable)")
    p.add_argument("--codecs", dest=D + "codecs",
                   type=csv(str), default=("huffman", "zlib", "lzma"),
                   help="stream codecs measured per stream (smallest kept)")
    p.add_argument("--seed", dest=D + "seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.common import config_from_args
    from slimkit.cli.console import print_mapping, print_table
    from slimkit.compact import DeepCompressConfig, deep_compress, write_slim
    from slimkit.data import load_data
    from slimkit.io import check_output_path, write_text_atomic

    check_output_path(args.output)  # fail before any work
    report_path = Path(str(args.output) + ".report.json")
    model = load(args, args.model)
    if args.pack_only:
        report = write_slim(model, args.output, codecs=tuple(getattr(args, D + "codecs"))
                            ).to_dict()
    else:
        config = config_from_args(DeepCompressConfig, args, "compact")
        data = load_data(args.data, model, split="train")
        eval_data = load_data(args.eval_data, model) if args.eval_data else None
        report = deep_compress(model, data, config, eval_data=eval_data,
                               output=args.output).to_dict()
    write_text_atomic(report_path, json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    if "stages" in report:
        print_table("Deep Compression stages (sizes: real .slim files on disk)",
                    report["stages"], ["stage", "accuracy", "slim_bytes", "ratio"])
        print_mapping("Result", {"file": args.output,
                                 "file_bytes": report["file"]["file_bytes"],
                                 "fp32_safetensors_bytes": report["file"]
                                 ["fp32_safetensors_bytes"],
                                 "ratio": report["file"]["ratio"],
                                 "accuracy_before": report["accuracy"]["before"],
                                 "accuracy_after": report["accuracy"]["after"],
                                 "verified": "loaded file gives identical outputs",
                                 "report": str(report_path)})
    else:
        print_table(f"{args.output}: {report['file_bytes']} bytes", report["tensors"])
