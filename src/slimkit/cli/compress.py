"""``slimkit compress``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from slimkit.cli.common import csv, load, model_args

if TYPE_CHECKING:
    from slimkit.data import Dataset
    from slimkit.evaluate.metrics import UserMetric
    from slimkit.model import Model

HELP = "run a recipe (--recipe FILE) or search for one under a metric budget (--auto)"
BUDGET_NOT_MET = 5  # a model was written, but the metric budget does not hold


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_args(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--recipe", help="a recipe YAML file (see recipes/ in the repository)")
    how.add_argument("--auto", action="store_true",
                     help="search pruning ratios per group and int8/float per layer")
    p.add_argument("-o", "--output", required=True,
                   help="folder to write (model.onnx, recipe.yaml, reports)")
    p.add_argument("--data", help="evaluation data, e.g. builtin:digits (labels give "
                                  "accuracy; without labels: cosine to the original)")
    p.add_argument("--train", help="fine-tuning/calibration data (default: the train split of "
                                   "--data, or --data itself)")
    p.add_argument("--metric", help="user metric package.module:function(outputs, labels)")
    p.add_argument("--threads", type=int, default=1, help="threads for latency measurements",
                   dest="search.threads")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    s = p.add_argument_group("search (--auto)")  # flags of SearchConfig's fields
    c = "search."
    s.add_argument("--max-drop", type=float, default=0.01, help="largest metric drop allowed",
                   dest=c + "max_drop")
    s.add_argument("--objective", default="latency", choices=["latency", "size", "both"],
                   dest=c + "objective")
    s.add_argument("--budget", help="wall-clock budget, e.g. 30m, 1.5h, 600s")
    s.add_argument("--trials", type=int, default=argparse.SUPPRESS, dest=c + "trials",
                   help="proxy trials (default 40; causal LMs: screened candidates, 24)")
    s.add_argument("--finalists", type=int, default=argparse.SUPPRESS, dest=c + "finalists",
                   help="candidates fine-tuned, exported and measured (default 4; causal "
                        "LMs: 3)")
    s.add_argument("--finetune-epochs", type=int, default=3, dest=c + "finetune_epochs",
                   help="fine-tuning of each finalist (0: none; the proxy limit is then the "
                        "budget itself)")
    s.add_argument("--finetune-workers", type=int, default=1, dest=c + "finetune_workers",
                   help="data-parallel (DDP) fine-tuning processes per finalist")
    s.add_argument("--refine-steps", type=int, default=None, dest=c + "refine_steps",
                   help="steps of the second round's walk to cheaper points, under the drop "
                        "limit the first finalists' fine-tuning calibrates (default: 6 when "
                        "finalists are fine-tuned)")
    s.add_argument("--no-int8", action="store_false", help="leave int8 out of the space",
                   dest=c + "quantize")
    s.add_argument("--ratios", type=csv(float), default=(0.0, 0.25, 0.5, 0.625, 0.75, 0.875),
                   dest=c + "ratios",
                   help="pruning ratios a group may take, e.g. 0,0.25,0.5,0.75")
    s.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2"], dest=c + "sampler")
    s.add_argument("--seed", type=int, default=0, dest=c + "seed")
    s.add_argument("--storage", dest=c + "storage",
                   help="Optuna storage: an RDB URL or a SQLite file (default: "
                        "OUTPUT/search.db; resumes when it exists)")
    s.add_argument("--study", help="study name (default: from the model digest)",
                   dest=c + "study_name")
    s.add_argument("--executor", default="inprocess", choices=["inprocess", "ray"],
                   dest=c + "executor")
    s.add_argument("--ray-address", dest=c + "ray_address",
                   help="join a running Ray cluster (default: start a local one)")
    s.add_argument("--workers", type=int, default=1, help="trials run at once",
                   dest=c + "workers")
    from slimkit.cli import compress_llm

    compress_llm.add_arguments(p)  # the causal-LM search's own group


def run(args: argparse.Namespace) -> int:
    from slimkit.cli.console import console
    from slimkit.cli.llm import is_causal_lm_spec

    if args.auto and is_causal_lm_spec(args.model):
        from slimkit.cli.compress_llm import run as search_causal_lm

        return search_causal_lm(args)
    from slimkit.cli.compress_llm import refuse_on_other_models

    refuse_on_other_models(args)
    model = load(args, args.model)
    data, train = _data(args, model)
    metric = _metric(args)
    if args.recipe:
        report, code = _recipe(args, model, data, train, metric)
    else:
        report, code = _search(args, model, data, train, metric)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _summary(console, report)
    return code


def _data(args: argparse.Namespace,
          model: Model) -> tuple[Dataset | None, Dataset | None]:
    from slimkit.data import load_data

    if not args.data:
        return None, None
    explicit = args.data.count(":") >= 2 or not args.data.startswith("builtin:")
    data = load_data(args.data, model, split="val")
    if args.train:
        train = load_data(args.train, model, split="train")
    else:
        train = data if explicit else load_data(args.data, model, split="train")
    return data, train


def _metric(args: argparse.Namespace) -> UserMetric | None:
    from slimkit.evaluate.metrics import load_user_metric

    return load_user_metric(args.metric) if args.metric else None


def _recipe(args: argparse.Namespace, model: Model, data: Dataset | None,
            train: Dataset | None, metric: UserMetric | None) -> tuple[dict[str, Any], int]:
    from slimkit.recipe import compress, load_recipe

    recipe = load_recipe(args.recipe)
    result = compress(model, recipe, args.output, data, train, metric=metric,
                      threads=getattr(args, "search.threads"))
    return result.to_dict(), BUDGET_NOT_MET if result.met_budget is False else 0


def _search(args: argparse.Namespace, model: Model, data: Dataset | None,
            train: Dataset | None, metric: UserMetric | None) -> tuple[dict[str, Any], int]:
    from slimkit.cli.common import config_from_args
    from slimkit.data import synthetic
    from slimkit.search import SearchConfig, parse_duration, search

    config = config_from_args(SearchConfig, args, "search", budget_s=parse_duration(
        args.budget) if args.budget else None)
    if data is None:
        data = synthetic(model.inputs, 64, seed=config.seed)
    result = search(model, data, args.output, config, train, metric)
    return result.to_dict(), 0 if result.met_budget else BUDGET_NOT_MET


def _summary(out: Any, report: dict[str, Any]) -> None:
    print_ = out.print
    check = report.get("verification") or {}
    best = report.get("best")
    if best:
        check = {"metric": report["noise"]["metric"], "original": report["original"]["metric"],
                 "compressed": best["metric"], "drop": best["drop"]}
        speed = f", {best.get('speedup', 1.0):.2f}x ORT speed-up" if "speedup" in best else ""
        print_(f"best of {len(report.get('finalists', []))} finalists "
               f"({len(report.get('trials', []))} proxy trials): trial {best['trial']}, "
               f"{best['bytes']} bytes{speed}")
    if check:
        print_(f"{check['metric']}: {check['original']:.4f} -> {check['compressed']:.4f} "
               f"(drop {check['drop']:.4f})")
    for row in report.get("latency", []):
        print_(f"  {row['model']}: {row['p50_ms']:.3f} ms p50 ({row['speedup']:.2f}x)")
    for warning in report.get("warnings", []):
        print_(f"[yellow]warning:[/] {warning}")
    state = report.get("met_budget")
    if state is False:
        print_("[red]the metric budget was not met[/]: the closest model was written")
    print_(f"written to {report['folder']}")
