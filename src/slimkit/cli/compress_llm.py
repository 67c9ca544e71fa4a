"""``slimkit compress MODEL --auto`` on a causal LM: the search of ``slimkit.search.llm``
under a perplexity (or KL) budget; its flags live in their own argument group."""

from __future__ import annotations

import argparse
import json
from typing import Any

from slimkit.cli.common import csv

BUDGET_NOT_MET = 5  # as compress: a model was written, but the budget does not hold
DEST = "llmsearch."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The causal-LM search's flags (``--trials``, ``--finalists``, ``--seed``, ``--threads``
    of the general search apply too)."""
    g = p.add_argument_group("search of a causal LM (--auto on an LLM: HF folder, .gguf, "
                             "builtin:smollm2)")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--max-ppl-increase", type=float, dest=DEST + "max_ppl_increase",
                        help="largest relative perplexity increase over fp32 on held-out "
                             "text (default 0.05: +5%%)")
    budget.add_argument("--max-kl", type=float, dest=DEST + "max_kl",
                        help="largest mean KL divergence from fp32 (nats/token) instead")
    g.add_argument("--max-perplexity", type=float, dest=DEST + "max_perplexity",
                   help="also an absolute perplexity budget (refused if fp32 misses it)")
    g.add_argument("--precisions", type=csv(str), dest=DEST + "precisions",
                   help="of int4,int8,w8a8,fp32 (default: all)")
    g.add_argument("--int4-methods", type=csv(str), dest=DEST + "int4_methods",
                   help="of rtn,hqq,gptq,awq (default: rtn,hqq,gptq; awq's screen costs about "
                        "5x GPTQ's)")
    g.add_argument("--block-sizes", type=csv(int), dest=DEST + "block_sizes",
                   help="int4 block sizes, of 32,64,128 (default: all)")
    g.add_argument("--depth-ratios", type=csv(float), dest=DEST + "depth_ratios",
                   help="decoder-layer shares to drop, e.g. 0,0.25 (default 0: off; each "
                        "costs a pruning, and distillation with --distill-steps)")
    g.add_argument("--width-ratios", type=csv(float), dest=DEST + "width_ratios",
                   help="head/FFN shares to prune, e.g. 0,0.25 (default 0: off)")
    g.add_argument("--distill-steps", type=int, dest=DEST + "distill_steps",
                   help="distillation steps of each pruned variant (default 0)")
    g.add_argument("--eval-windows", type=int, dest=DEST + "eval_windows",
                   help="held-out windows of 512 tokens the finalists are judged on (default 8)")
    g.add_argument("--speed-rounds", type=int, dest=DEST + "speed_rounds",
                   help="timed rounds of the finalists (default 3; 0: no timing)")
    g.add_argument("--calib", help="calibration text (default: "
                   "builtin:python-reference:calibration)", dest=DEST + "calib")


def refuse_on_other_models(args: argparse.Namespace) -> None:
    """The causal-LM flags given for a model that is not one: one clear line."""
    from slimkit.errors import InputError

    given = [key[len(DEST):].replace("_", "-") for key, value in vars(args).items()
             if key.startswith(DEST) and value is not None]
    if given:
        raise InputError(f"--{', --'.join(given)} apply to causal LMs only; '{args.model}' is "
                         "not one (use --max-drop for other models)")


def run(args: argparse.Namespace) -> int:
    """Search, print a summary (or the JSON report), return 0 or ``BUDGET_NOT_MET``."""
    from slimkit.cli.console import console
    from slimkit.errors import InputError
    from slimkit.load import load_model
    from slimkit.search.llm import LLMSearchConfig, search_llm

    if args.data or args.metric or args.train or getattr(args, "search.max_drop") != 0.01:
        raise InputError("--data, --train, --metric and --max-drop do not apply to a causal "
                         "LM: it is judged by perplexity on held-out text (use "
                         "--max-ppl-increase or --max-kl)")
    given = {key[len(DEST):]: value for key, value in vars(args).items()
             if key.startswith(DEST) and value is not None and key != DEST + "calib"}
    shared = {k: getattr(args, f"search.{k}") for k in ("trials", "finalists")
              if hasattr(args, f"search.{k}")}  # else the LLM search's own defaults
    config = LLMSearchConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in given.items()}, **shared,
                             threads=getattr(args, "search.threads"),
                             seed=getattr(args, "search.seed"))
    result = search_llm(load_model(args.model), args.output, config,
                        getattr(args, DEST + "calib"))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _summary(console, result.report, str(result.folder))
    return 0 if result.met_budget else BUDGET_NOT_MET


def _summary(out: Any, report: dict[str, Any], folder: str) -> None:
    best, original = report["best"], report["original"]
    measure = report["budget"]["measure"]
    out.print(f"{len(report['trials'])} candidates screened ({report['screen']}); "
              f"{len(report['finalists'])} finalists exported and measured")
    speed = (f", decode {best['decode_tok_s']:.1f} tok/s vs fp32 "
             f"{original['decode_tok_s']:.1f}" if best.get("decode_tok_s")
             and original.get("decode_tok_s") else "")
    out.print(f"chosen: {best['label']}: {measure} {best[measure]:.4g} (budget "
              f"{report['budget']['limit']:g}), {best['size_bytes']} bytes{speed}")
    versus = report.get("versus_single")
    if versus and versus["chosen_is_single"]:
        out.print("the chosen model is itself a single technique: no composition measured "
                  "faster under this budget")
    elif versus:
        out.print(f"versus the best single technique ({versus['single']}): "
                  f"{versus['decode_ratio']:.2f}x decode tokens/s")
    for warning in report.get("warnings", []):
        out.print(f"[yellow]warning:[/] {warning}")
    if not report["met_budget"]:
        out.print("[red]the budget was not met[/]: the closest model was written")
    out.print(f"written to {folder} (report: slimkit report {folder} -o report.html)")
