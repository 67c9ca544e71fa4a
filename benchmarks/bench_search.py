"""Automatic search vs single techniques, measured side by side in ONNX Runtime (1 thread,
batch 1, interleaved rounds).

resnet18-cifar trained on digits (8x8 images upsampled to 3x32x32; a short fixed-seed training
run, cached), budget: 1 accuracy point on the 360-image val split (the test split, never seen
by the search, is reported too). Compared:
    fp32            the plain ONNX export
    int8-only       slimkit.quantize static int8 (u8 activations, per-channel s8 weights)
    prune-only      uniform structured pruning + the same BatchNorm recalibration and
                    fine-tuning, the largest ratio of the grid that meets the budget
    searched        slimkit.search (per-group ratios, int8 or float per layer)
MiniLM (--minilm, a run of its own): mean cosine >= 0.98 to the original embeddings on held-out
sentences, the searched model vs ORT fp32 and ORT quantize_dynamic per-channel.

    python benchmarks/bench_search.py [--quick]   -> benchmarks/results/search.json
    python benchmarks/bench_search.py --minilm    -> benchmarks/results/search-minilm.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import digits_as, trained_resnet18_cifar

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "search.json"
BUDGET = 0.01
TRAIN_SEED = 0
SEARCH_RATIOS = (0.0, 0.25, 0.5, 0.625, 0.75, 0.875)


def log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


def accuracy_of(model: Any, data: Any) -> float:
    from slimkit.recipe.metric import Scorer

    return Scorer(model, data).baseline if model.module is not None else float("nan")


def resnet_part(args: argparse.Namespace, tmp: Path, started: float) -> dict[str, Any]:
    import slimkit
    from slimkit.prune import PruneConfig
    from slimkit.quantize import QuantizeConfig
    from slimkit.recipe import FinetuneConfig, Recipe, Stage, compress
    from slimkit.recipe.run import measure_side_by_side
    from slimkit.search import SearchConfig, search
    from slimkit.train.batchnorm import BatchNormConfig

    model = trained_resnet18_cifar(args.train_epochs, TRAIN_SEED)
    training = {"epochs": args.train_epochs, "seed": TRAIN_SEED}
    log(started, f"resnet18-cifar trained on digits ({args.train_epochs} epochs)")
    val, train, test = (digits_as(model, split) for split in ("val", "train", "test"))
    ft = FinetuneConfig(epochs=args.finetune_epochs, lr=1e-3, seed=0)
    out: dict[str, Any] = {"training": training, "budget_points": BUDGET * 100,
                           "val_examples": len(val), "test_examples": len(test)}
    fp32 = slimkit.export_onnx(model, tmp / "fp32.onnx").model
    variants: dict[str, Any] = {"fp32": dataclasses.replace(fp32, name="fp32")}
    info: dict[str, Any] = {}

    recipe = Recipe((Stage("quantize", QuantizeConfig(mode="static", activation_type="u8")),),
                    name="int8-only", max_drop=BUDGET)
    r = compress(model, recipe, tmp / "int8", val, train, measure=False)
    variants["int8-only"] = dataclasses.replace(r.model, name="int8-only")
    info["int8-only"] = r.sections["verification"]
    log(started, f"int8-only: {info['int8-only']}")

    for ratio in args.uniform_ratios:  # largest first: the first that meets the budget wins
        recipe = Recipe((Stage("prune", PruneConfig(ratio=ratio, importance="l2")),
                         Stage("batchnorm", BatchNormConfig()), Stage("finetune", ft)),
                        name=f"prune-only-{ratio}", max_drop=BUDGET)
        r = compress(model, recipe, tmp / f"prune-{ratio}", val, train, measure=False)
        log(started, f"prune-only {ratio}: {r.sections['verification']}")
        if r.met_budget:
            variants["prune-only"] = dataclasses.replace(r.model, name=f"prune-only-{ratio}")
            info["prune-only"] = {"ratio": ratio, **r.sections["verification"]}
            break

    config = SearchConfig(max_drop=BUDGET, objective="latency", trials=args.trials,
                          finalists=args.finalists, finetune_epochs=args.finetune_epochs,
                          seed=0, eval_examples=args.proxy_examples, quant_layer_choices=2,
                          ratios=args.ratios, trial_threads=args.trial_threads)
    result = search(model, val, tmp / "search", config, train)
    variants["searched"] = dataclasses.replace(result.model, name="searched")
    info["searched"] = {"met_budget": result.met_budget, **result.sections["best"]}
    out["search"] = {k: result.sections[k] for k in ("noise", "sensitivity", "front", "seconds",
                                                      "warnings", "finalists", "second_round")}
    out["search"]["trials"] = len(result.sections["trials"])
    out["search"]["recipe"] = result.recipe.to_dict()
    log(started, f"searched: drop {info['searched']['drop']} in {result.sections['seconds']}s")

    rows = measure_side_by_side(list(variants.values()), threads=1, rounds=args.rounds)
    out["latency"] = rows
    p50 = {row["model"]: row["p50_ms"] for row in rows}
    names = list(variants)
    out["variants"] = {name: {**info.get(name, {}), "p50_ms": p50[variants[name].name],
                              "test_accuracy": _test_accuracy(variants[name], test)}
                       for name in names}
    out["variants"]["fp32"]["val_accuracy"] = accuracy_of(model, val)
    single = [p50[variants[n].name] for n in ("int8-only", "prune-only") if n in variants
              and info[n].get("met_budget", True)]
    searched = p50["searched"]
    out["summary"] = {
        "searched_speedup_over_fp32": round(p50["fp32"] / searched, 3),
        "searched_speedup_over_best_single": round(min(single) / searched, 3) if single
        else None,
        "searched_met_budget": result.met_budget,
        "targets": {"over_fp32": 5.0, "over_best_single": 1.3}}
    return out


def _test_accuracy(model: Any, test: Any) -> float:
    from slimkit.evaluate.metrics import accuracy, predict

    return round(accuracy(predict(model, test, "onnxruntime"), test.labels), 4)


def minilm_part(args: argparse.Namespace, tmp: Path, started: float) -> dict[str, Any]:
    from common import sentences
    from onnxruntime.quantization import quantize_dynamic

    import slimkit
    from slimkit.recipe.metric import Scorer
    from slimkit.recipe.run import measure_side_by_side
    from slimkit.search import SearchConfig, search

    model = slimkit.load_model("builtin:minilm")
    texts = {"eval": sentences(64, 1), "train": sentences(256, 2)}
    seen = set(texts["eval"]) | set(texts["train"])
    texts["test"] = [t for t in sentences(600, 3) if t not in seen][:200]  # held out
    data = {}
    for split, lines in texts.items():
        path = tmp / f"{split}.txt"
        path.write_text("\n".join(lines) + "\n")
        data[split] = slimkit.load_data(str(path), model)
    fp32 = slimkit.export_onnx(model, tmp / "minilm.onnx").model
    quantize_dynamic(fp32.onnx_path, tmp / "minilm-dyn-pc.onnx", per_channel=True)
    dyn = fp32.with_onnx(tmp / "minilm-dyn-pc.onnx")
    config = SearchConfig(max_drop=0.02, objective="latency", trials=args.minilm_trials,
                          finalists=3, finetune_epochs=3, finetune_lr=5e-5, seed=0,
                          quant_layer_choices=2,
                          ratios=(0.0, 0.125, 0.25, 0.5), eval_examples=64)
    result = search(model, data["eval"], tmp / "minilm-search", config, data["train"])
    log(started, f"minilm search: met {result.met_budget} in {result.sections['seconds']}s")
    rows = measure_side_by_side([dataclasses.replace(fp32, name="ort-fp32"),
                                 dataclasses.replace(dyn, name="ort-dynamic-per-channel"),
                                 dataclasses.replace(result.model, name="searched")], 1,
                                args.rounds)
    log(started, f"minilm: {rows}")
    test = Scorer(model, data["test"])
    p50 = {row["model"]: row["p50_ms"] for row in rows}
    cosine = {"ort-dynamic-per-channel": round(test.score(dyn), 4),
              "searched": round(test.score(result.model), 4)}
    return {"floor": 0.98, "eval_sentences": 64, "train_sentences": 256,
            "test_sentences": len(texts["test"]), "latency": rows, "test_cosine": cosine,
            "search": {k: result.sections[k] for k in ("noise", "front", "seconds", "warnings",
                                                       "finalists")},
            "searched_met_budget": result.met_budget, "recipe": result.recipe.to_dict(),
            "summary": {"searched_speedup_over_fp32": round(p50["ort-fp32"] / p50["searched"], 3),
                        "dynamic_pc_speedup_over_fp32": round(
                            p50["ort-fp32"] / p50["ort-dynamic-per-channel"], 3),
                        "searched_test_cosine": cosine["searched"],
                        "dynamic_pc_test_cosine": cosine["ort-dynamic-per-channel"],
                        "searched_met_floor_on_eval": result.met_budget}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer trials and epochs (minutes)")
    p.add_argument("--minilm", action="store_true", help="the MiniLM search (instead of "
                   "resnet18-cifar)")
    p.add_argument("--output", default=None, help="default: benchmarks/results/search.json "
                   "(search-minilm.json with --minilm)")
    args = p.parse_args(argv)
    args.output = args.output or str(RESULTS.with_name("search-minilm.json") if args.minilm
                                     else RESULTS)
    quick = args.quick
    args.train_epochs = 3
    args.finetune_epochs = 2 if quick else 3
    args.trials = 16 if quick else 40
    args.finalists = 4 if quick else 5
    args.uniform_ratios = (0.875, 0.75, 0.625, 0.5, 0.25)
    args.rounds = 5 if quick else 9
    args.minilm_trials = 12 if quick else 24
    args.proxy_examples = 128 if quick else 359
    args.ratios = (0.0, 0.5, 0.625, 0.75, 0.875) if quick else SEARCH_RATIOS
    args.trial_threads = max(1, (os.cpu_count() or 2) // 2)
    return args


def main(argv: list[str] | None = None) -> int:
    from slimkit.io import write_text_atomic

    args = parse_args(argv)
    started = time.perf_counter()
    out: dict[str, Any] = {"quick": args.quick, "threads": 1, "batch": 1,
                           "note": "ratios measured side by side in one run; on a shared "
                                   "machine the figures are indicative"}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as name:
        tmp = Path(name)
        part = "minilm" if args.minilm else "resnet18_cifar_digits"
        out[part] = (minilm_part if args.minilm else resnet_part)(args, tmp, started)
    out["seconds"] = round(time.perf_counter() - started, 1)
    write_text_atomic(args.output, json.dumps(out, indent=2, default=str) + "\n")
    print(json.dumps(out[part]["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
