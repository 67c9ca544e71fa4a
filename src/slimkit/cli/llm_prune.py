"""Causal-LM routes of ``slimkit prune`` and ``slimkit distill`` (not a command itself): the
flags only causal LMs read, and the calls of ``slimkit.llm.prune.prune_llm`` and
``slimkit.llm.distill.distill_llm``. Shared flags (``--ratio``, ``--seed``...) keep their
meaning; flags of the generic commands that do not apply to a causal LM are refused."""

from __future__ import annotations

import argparse
import json
from typing import Any

from slimkit.cli.common import config_from_args

LP, LD = "llmprune.", "llmdistill."


def add_prune_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``slimkit prune`` that only causal LMs read."""
    g = p.add_argument_group(
        "causal LMs (builtin:smollm2, HF *ForCausalLM folders, .gguf)",
        "--ratio is the share of weights (sparse methods, default 0.5), of heads and FFN "
        "neurons (width, default 0.25) or of decoder layers (depth, default 0.25); the output "
        "is a Hugging Face folder that 'slimkit export' turns into a generation folder")
    g.add_argument("--method", dest=LP + "method", default="wanda",
                   choices=["magnitude", "wanda", "sparsegpt", "width", "depth"],
                   help="magnitude/wanda/sparsegpt: zero single weights (no speed-up in dense "
                        "runtimes, a smaller compressed file); width: heads + FFN neurons; "
                        "depth: whole decoder layers (default wanda)")
    g.add_argument("--pattern", dest=LP + "pattern", default="unstructured",
                   help="unstructured or N:M, e.g. 2:4 (sparse methods)")
    g.add_argument("--calib", default="builtin:python-reference:calibration",
                   help="calibration text: a UTF-8 .txt file or the calibration part of "
                        "builtin:python-reference (default)")
    g.add_argument("--windows", dest=LP + "windows", type=int, default=32,
                   help="calibration windows (default 32)")
    g.add_argument("--window", dest=LP + "window", type=int, default=512,
                   help="tokens per calibration window (default 512)")
    g.add_argument("--head-unit", dest=LP + "head_unit", default="query",
                   choices=["query", "group"],
                   help="width: query heads evenly per key/value group, or whole groups")
    g.add_argument("--depth-criterion", dest=LP + "depth_criterion",
                   default="block-influence", choices=["block-influence", "angular"])


def prune_causal_lm(args: argparse.Namespace) -> None:
    """``slimkit prune`` of a causal LM."""
    from slimkit.cli.console import print_mapping
    from slimkit.errors import InputError
    from slimkit.llm.prune import LLMPruneConfig, prune_llm
    from slimkit.llm.prune.api import REPORT_FILE, check_output_folder
    from slimkit.load import load_model

    if getattr(args, "prune.mode") == "unstructured" or args.sensitivity \
            or getattr(args, "finetune.epochs") or getattr(args, "prune.compensate"):
        raise InputError("--unstructured, --sensitivity, --finetune-epochs and --compensate do "
                         "not apply to a causal LM: use --method/--pattern, and recover with "
                         "'slimkit distill TEACHER --student PRUNED --data TEXT'")
    shared = {k: getattr(args, f"prune.{k}") for k in ("ratio", "head_ratio", "ffn_ratio",
                                                       "seed", "round_to")}
    shared = {k: v for k, v in shared.items() if v is not None}
    config = config_from_args(LLMPruneConfig, args, "llmprune", **shared)
    check_output_folder(args.output, REPORT_FILE)  # before the work
    result = prune_llm(load_model(args.model), config, calib=args.calib)
    folder = result.save(args.output)
    if args.json:
        print(json.dumps(result.report, indent=2, default=str))
        return
    print_mapping(f"pruned {args.model} ({config.method.value}) -> {folder}",
                  _prune_rows(result.report))


def _prune_rows(report: dict[str, Any]) -> dict[str, Any]:
    rows = {"parameters": f"{report['parameters']['before']:,} -> "
                          f"{report['parameters']['after']:,}",
            "fp32 bytes": f"{report['bytes']['before']['dense']:,} -> "
                          f"{report['bytes']['after']['dense']:,}"}
    if "sparsity" in report:
        rows["sparsity (decoder Linear)"] = report["sparsity"]["decoder_linear"]
        rows["bytes as bitmask + values"] = f"{report['bytes']['after']['sparse_format']:,}"
        rows["speed"] = "none on dense runtimes (same shapes, zeros still multiplied)"
    if "depth" in report:
        rows["layers dropped"] = report["depth"]["dropped"]
    if "width" in report:
        rows["shape"] = report["width"]["after"]
    rows["KL vs original (calibration windows)"] = report["check"]["kl_mean"]
    rows["seconds (CPU)"] = report["seconds"]["cpu"]
    return rows


def add_distill_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``slimkit distill`` that only causal LMs read."""
    g = p.add_argument_group(
        "causal LMs", "MODEL is the teacher, --student the pruned model, --data the text "
        "(e.g. builtin:python-reference:calibration); defaults: 200 steps (--max-steps), "
        "lr 1e-4, batch 4 windows, temperature 1")
    g.add_argument("--window", dest=LD + "window", type=int, default=256,
                   help="tokens per training window (default 256)")
    g.add_argument("--hidden-weight", dest=LD + "hidden_weight", type=float, default=0.0,
                   help="weight of the final-hidden-state MSE added to the KL (default 0)")
    g.add_argument("--train-embeddings", dest=LD + "train_embeddings", action="store_true",
                   help="also train the (tied) embeddings / LM head")
    g.add_argument("--threads", dest=LD + "threads", type=int,
                   help="torch threads while training (default: as they are)")


def distill_causal_lm(args: argparse.Namespace) -> None:
    """``slimkit distill`` of a causal LM: recovery of a pruned student from the teacher."""
    from slimkit.cli.console import print_mapping
    from slimkit.errors import InputError
    from slimkit.llm.distill import REPORT_FILE, LLMDistillConfig, distill_llm
    from slimkit.llm.prune.api import check_output_folder
    from slimkit.load import load_model

    if args.student is None:
        raise InputError("a causal LM distils into --student (e.g. the folder 'slimkit prune "
                         "--method depth' wrote); --keep-every/--prune-ratio are for encoders")
    if args.val or args.checkpoint or getattr(args, "distill.features"):
        raise InputError("--val, --checkpoint and --hint do not apply to a causal LM")
    shared = {"steps": getattr(args, "distill.max_steps"), "lr": getattr(args, "distill.lr"),
              "batch_size": getattr(args, "distill.batch_size"),
              "temperature": getattr(args, "distill.temperature"),
              "seed": getattr(args, "distill.seed")}
    config = config_from_args(LLMDistillConfig, args, "llmdistill",
                              **{k: v for k, v in shared.items() if v is not None})
    check_output_folder(args.output, REPORT_FILE)  # before the work
    teacher, student = load_model(args.model), load_model(args.student)
    result = distill_llm(student, teacher, args.data, config)
    folder = result.save(args.output)
    if args.json:
        print(json.dumps(result.report, indent=2))
        return
    r = result.report
    print_mapping(f"distilled {student.name} from {teacher.name} -> {folder}", {
        "steps": r["steps"], "tokens": r["tokens"], "CPU minutes": r["cpu_minutes"],
        "KL before (training windows)": r["kl_before"], "KL after": r["kl_after"]})
