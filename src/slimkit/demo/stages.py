"""The compression stages of ``slimkit demo`` after quantization: structured pruning with two
recoveries side by side (plain fine-tuning vs distillation from the original, same steps, seed
and optimizer), Deep Compression into a ``.slim`` file, and a short automatic search under a
1-point budget. Each returns a plain dict for the report; ``quick`` shortens them (tests)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from slimkit.data import Dataset
from slimkit.model import Model

PRUNE_RATIO = 0.7  # hard enough that recovery matters: ~99% -> ~20-65% before training
RECOVERY_STEPS = (200, 400)  # (quick, full)
SEARCH_BUDGET_S = (60.0, 180.0)


def sensitivity(model: Model, val: Dataset, seed: int) -> dict[str, Any]:
    """Each group of coupled channels pruned alone at 25/50/75%, accuracy on the validation
    split: which layers the uniform 70% cut hurts most."""
    from slimkit.prune import PruneConfig
    from slimkit.prune.sensitivity import sensitivity_scan

    scan = sensitivity_scan(model, val, PruneConfig(ratio=PRUNE_RATIO, round_to=4, seed=seed))
    return {**scan.to_dict(), "data": f"validation split ({len(val)} images)",
            "ratios": [0.25, 0.5, 0.75]}


def pruning_and_recovery(model: Model, train: Dataset, test: Dataset, out: Path, seed: int,
                         quick: bool) -> tuple[dict[str, Any], Model]:
    """Remove 70% of the channels, recover two ways, save the distilled student; return the
    report section and the distilled model (benchmarked by the demo)."""
    from slimkit.distill import DistillConfig, distill
    from slimkit.evaluate.metrics import accuracy, predict
    from slimkit.prune import PruneConfig, prune

    pruned = prune(model, PruneConfig(ratio=PRUNE_RATIO, round_to=4, seed=seed))
    steps = RECOVERY_STEPS[0 if quick else 1]

    def acc(m: Model) -> float:
        labels = test.labels
        return accuracy(predict(m, test, "torch"), labels) if labels is not None else 0.0

    runs = {}
    for name, alpha in (("finetune", 0.0), ("distill", 0.9)):
        config = DistillConfig(loss="kd", alpha=alpha, temperature=4.0, lr=1e-3, batch_size=64,
                               epochs=10_000, max_steps=steps, seed=seed)
        runs[name] = distill(pruned.model, model, train, config)
    student = replace(runs["distill"].model, name="digits-cnn-pruned-distilled")
    folder = runs["distill"].save(out / "digits-cnn-pruned", plan=pruned.plan)
    size = pruned.sections["size"]
    section = {
        "ratio": PRUNE_RATIO, "importance": "l1", "steps": steps, "seed": seed,
        "parameters_before": size["parameters_before"],
        "parameters_after": size["parameters_after"],
        "macs_before": size["macs_before"], "macs_after": size["macs_after"],
        "accuracy_original": acc(model), "accuracy_pruned": acc(pruned.model),
        "accuracy_finetuned": acc(runs["finetune"].model),
        "accuracy_distilled": acc(student),
        "recovery": "same loop, steps, seed and Adam lr 1e-3: fine-tuning = cross-entropy on "
                    "labels (alpha 0); distillation = KL to the original at T 4 (alpha 0.9)",
        "saved": str(folder),
    }
    return section, student


def deep_compression(model: Model, train: Dataset, test: Dataset, out: Path, seed: int,
                     quick: bool) -> tuple[dict[str, Any], Model]:
    """Prune 95% of the weights, share them in 16 clusters, entropy-code into a .slim file;
    return the section and the model read back from the file (dense once decoded)."""
    from slimkit.compact import DeepCompressConfig, deep_compress, load_slim

    config = DeepCompressConfig(sparsity=0.95, clusters=16, seed=seed,
                                prune_epochs=4 if quick else 30,
                                cluster_epochs=1 if quick else 10)
    path = out / "digits-cnn.slim"
    result = deep_compress(model, train, config, eval_data=test, output=path)
    sections = result.sections
    decoded = replace(load_slim(path), name="digits-cnn.slim")
    return {"file": str(result.path), "file_bytes": sections["file"]["file_bytes"],
            "fp32_safetensors_bytes": sections["file"]["fp32_safetensors_bytes"],
            "ratio": sections["file"]["ratio"], "accuracy": sections["accuracy"],
            "stages": [{k: row[k] for k in ("stage", "accuracy", "slim_bytes", "ratio")}
                       for row in sections["stages"]],
            "loaded_equals_compressed": sections["verify"]["max_abs_difference"] == 0.0,
            "runs_as": "decoded to a dense model: the file is small, inference is not faster "
                       "(dense kernels multiply the zeros)"}, decoded


def auto_search(model: Model, train: Dataset, val: Dataset, out: Path, seed: int,
                quick: bool) -> tuple[dict[str, Any], Model | None]:
    """``slimkit compress --auto --max-drop 0.01`` on the demo model, bounded in time; return
    the section and the model it found (None when the search cannot run here)."""
    from slimkit.errors import MissingDependencyError
    from slimkit.search import SearchConfig, search

    config = SearchConfig(max_drop=0.01, budget_s=SEARCH_BUDGET_S[0 if quick else 1],
                          trials=8 if quick else 20, finalists=1 if quick else 2,
                          finetune_epochs=2, seed=seed)
    try:
        result = search(model, val, out / "search", config, train=train)
    except MissingDependencyError as exc:  # an install without optuna: the rest still runs
        return {"skipped": str(exc)}, None
    sections = result.to_dict()
    best = sections.get("best") or {}
    section = {"met_budget": result.met_budget, "max_drop": 0.01, "best": best,
               "front": sections.get("front"), "folder": str(out / "search"),
               "warnings": sections.get("warnings", []),
               "trials": sections.get("trials", []), "objectives": sections.get("objectives"),
               "finalists": sections.get("finalists", []),
               "trial_budget": config.trials, "budget_seconds": config.budget_s}
    return section, replace(result.model, name="searched")
