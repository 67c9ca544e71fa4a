"""``slimkit prune``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slimkit.cli.common import csv, load, model_args
from slimkit.cli.llm_prune import add_prune_arguments

GENERIC_DEFAULTS = {"prune.ratio": 0.5, "prune.round_to": 8}  # causal LMs have their own

HELP = "remove channels (a smaller model) or mask weights; optionally fine-tune"
CRITERIA = "l1, l2, random (no data); taylor, saliency (gradients); activation (w^2 E[x^2] " \
           "on data); slimming, group_lasso (sparse training on labelled data first)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pr, ft = "prune.", "finetune."  # flags of PruneConfig's and FinetuneConfig's fields
    model_args(p)
    p.add_argument("-o", "--output", required=True,
                   help="folder to write (prune-plan.json + model.safetensors)")
    p.add_argument("--unstructured", action="store_const", const="unstructured",
                   default="structured", dest=pr + "mode",
                   help="mask single weights (no speed-up on dense runtimes) instead of "
                        "removing channels")
    p.add_argument("--ratio", type=float, help="share to remove, in [0, 1) (default 0.5; "
                   "causal LMs: see below)", dest=pr + "ratio")
    p.add_argument("--head-ratio", type=float, dest=pr + "head_ratio",
                   help="transformers: share of attention heads to remove (default: --ratio)")
    p.add_argument("--ffn-ratio", type=float, dest=pr + "ffn_ratio",
                   help="transformers: share of FFN neurons to remove (default: --ratio)")
    p.add_argument("--hidden-ratio", type=float, dest=pr + "hidden_ratio",
                   help="share of the hidden size (a transformer's residual stream) to remove "
                        "(default: --ratio, or 0 with --head-ratio/--ffn-ratio; a hidden size "
                        "the model outputs is always kept)")
    p.add_argument("--compensate", action="store_true", dest=pr + "compensate",
                   help="transformers: add the mean output of removed heads/neurons to the "
                        "next bias (needs --data)")
    p.add_argument("--scope", default="layer", choices=["layer", "global"], dest=pr + "scope")
    p.add_argument("--importance", default="l1", help=f"criterion: {CRITERIA}",
                   dest=pr + "importance")
    p.add_argument("--group-reduce", default="sum", choices=["sum", "mean"],
                   dest=pr + "group_reduce")
    p.add_argument("--round-to", type=int, dest=pr + "round_to",
                   help="keep channel counts a multiple (default 8; causal LMs: FFN width, 32)")
    p.add_argument("--exclude", action="append", default=[], metavar="RULE", dest=pr + "exclude",
                   help="layers never pruned: name:EXACT, re:REGEX or type:OP (repeatable)")
    p.add_argument("--data", help="data for data-driven importance, sparse training and "
                                  "fine-tuning (e.g. builtin:digits:train)")
    p.add_argument("--eval-data", help="data to measure the metric on (sensitivity scan, "
                                       "accuracy before/after fine-tuning)")
    p.add_argument("--penalty", type=float, default=1e-4, dest=pr + "penalty",
                   help="strength of the slimming / group-lasso penalty")
    p.add_argument("--finetune-epochs", type=int, default=0, dest=ft + "epochs",
                   help="epochs of fine-tuning on --data after each pruning step")
    p.add_argument("--finetune-workers", type=int, default=1, metavar="N", dest=ft + "workers",
                   help="data-parallel fine-tuning processes (torch DDP; each trains on a "
                        "share of every batch)")
    p.add_argument("--iterations", type=int, default=1, dest=ft + "iterations",
                   help="pruning steps (cubic schedule), each followed by fine-tuning")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate",
                   dest=ft + "lr")
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"],
                   dest=ft + "optimizer")
    p.add_argument("--batch-size", type=int, default=64, help="fine-tuning batch size",
                   dest=ft + "batch_size")
    p.add_argument("--sensitivity", action="store_true",
                   help="scan every group alone on --eval-data (or --data) and set per-group "
                        "ratios reaching --ratio overall")
    p.add_argument("--sensitivity-ratios", type=csv(float), default=(0.25, 0.5, 0.75),
                   help="ratios the scan tries (comma-separated)")
    p.add_argument("--seed", type=int, default=0, dest=pr + "seed")
    p.add_argument("--measure", action="store_true",
                   help="measure ONNX Runtime latency before/after in the same run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_prune_arguments(p)


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.common import config_from_args
    from slimkit.cli.console import print_prune
    from slimkit.cli.llm import is_causal_lm_spec
    from slimkit.data import load_data
    from slimkit.io import check_output_path
    from slimkit.prune import AdvancedPrune, PruneConfig, prune
    from slimkit.train import FinetuneConfig

    if is_causal_lm_spec(args.model):
        from slimkit.cli.llm_prune import prune_causal_lm

        return prune_causal_lm(args)
    for dest, value in GENERIC_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    config = config_from_args(PruneConfig, args, "prune")
    finetune = config_from_args(FinetuneConfig, args, "finetune", seed=config.seed)
    advanced = AdvancedPrune(tuple(args.sensitivity_ratios) if args.sensitivity else (),
                             args.measure, args.threads)
    out = Path(args.output)
    check_output_path(out / "prune-plan.json" if out.is_dir() else out)  # fail before work
    model = load(args, args.model)
    data = load_data(args.data, model, split="train") if args.data else None
    eval_data = load_data(args.eval_data, model) if args.eval_data else None
    result = prune(model, config, data, finetune=finetune, eval_data=eval_data,
                   advanced=advanced)
    folder = result.save(args.output)
    if args.json:
        print(json.dumps(result.sections, indent=2, default=str))
    else:
        print_prune(result.sections, folder)
