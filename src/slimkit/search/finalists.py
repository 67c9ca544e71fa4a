"""The second stage of a search: the promising proxy points (spread along the proxy Pareto
front) become recipes, are compressed for real (fine-tuned, exported or quantized, verified in
ONNX Runtime), measured side by side with the original, and ranked."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from slimkit.data import Dataset
from slimkit.evaluate import UserMetric
from slimkit.model import Model
from slimkit.prune import PruneConfig
from slimkit.quantize import QuantizeConfig, QuantMode
from slimkit.recipe import FinetuneConfig, Recipe, Stage, compress
from slimkit.recipe.run import measure_side_by_side
from slimkit.search.config import Objective, SearchConfig
from slimkit.search.space import SearchSpace
from slimkit.search.study import CONSTRAINT


def point_recipe(space: SearchSpace, params: dict[str, Any], config: SearchConfig,
                 name: str) -> Recipe:
    """The replayable recipe of one search point."""
    stages = []
    rules = space.prune_rules(params)
    if rules:
        stages.append(Stage("prune", PruneConfig(ratio=0.0, layer_ratios=rules,
                                                 importance="l2", seed=config.seed)))
        if config.finetune_epochs:
            stages.append(Stage("finetune", FinetuneConfig(
                epochs=config.finetune_epochs, lr=config.finetune_lr, seed=config.seed)))
    if params.get("int8"):
        exclude = tuple(f"name:{layer}" for layer in space.float_layers(params))
        stages.append(Stage("quantize", QuantizeConfig(mode=QuantMode.STATIC, per_channel=True,
                                                       exclude=exclude)))
    else:
        stages.append(Stage("export", _export_config()))
    return Recipe(tuple(stages), name=name, max_drop=config.max_drop,
                  description="found by slimkit compress --auto")


def _export_config() -> Any:
    from slimkit.export.onnx import ExportConfig

    return ExportConfig()


def pick(trials: list[Any], count: int) -> list[Any]:
    """Up to ``count`` feasible trials spread along their Pareto front (cheapest first); with
    no feasible trial, the ones with the smallest drop."""
    feasible = [t for t in trials if t.user_attrs.get(CONSTRAINT, 1.0) <= 0]
    if not feasible:
        return sorted(trials, key=lambda t: (t.values[-1], t.number))[:count]
    front = sorted(pareto(feasible, lambda t: tuple(t.values)),
                   key=lambda t: (t.values[0], t.number))
    if len(front) > count:
        step = (len(front) - 1) / max(count - 1, 1)
        front = [front[round(i * step)] for i in range(count)]
    rest = sorted((t for t in feasible if t not in front), key=lambda t: (t.values[0], t.number))
    return (front + rest)[:count]


def pareto(items: list[Any], key: Any) -> list[Any]:
    """The items no other item dominates (all coordinates minimised).

    Example:
        >>> pareto([(1, 3), (2, 2), (3, 3), (1, 4)], key=lambda p: p)
        [(1, 3), (2, 2)]
    """
    points = [key(item) for item in items]

    def dominated(p: tuple[float, ...]) -> bool:
        return any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p for q in points)

    return [item for item, p in zip(items, points, strict=True) if not dominated(p)]


def run_finalists(model: Model, space: SearchSpace, trials: list[Any], config: SearchConfig,
                  folder: Path, data: Dataset, train: Dataset | None,
                  metric: UserMetric | None,
                  deadline: float | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Compress each picked trial for real, then measure them all beside the original
    (ONNX Runtime, batch 1, interleaved); returns the rows and the original's timing."""
    rows: list[dict[str, Any]] = []
    folder.mkdir(exist_ok=True)
    for trial in pick(trials, config.finalists):
        if deadline is not None and time.monotonic() > deadline and rows:
            break
        recipe = point_recipe(space, trial.params, config, f"search-trial-{trial.number}")
        result = compress(model, recipe, folder / f"trial-{trial.number}", data, train,
                          metric=metric, measure=False, threads=config.threads)
        check = result.sections["verification"]
        rows.append({"trial": trial.number, "params": dict(trial.params),
                     "proxy": {k: trial.user_attrs.get(k) for k in ("macs", "bytes", "drop")},
                     "metric": check["compressed"], "drop": check["drop"],
                     "bytes": result.sections["size"]["onnx_bytes"],
                     "met_budget": bool(check["drop"] <= config.max_drop + 1e-12),
                     "path": str(result.model.onnx_path), "recipe": recipe.to_dict(),
                     "model": result.model})
    latency = measure_side_by_side([model, *(row["model"] for row in rows)], config.threads)
    for row, lat in zip(rows, latency[1:], strict=True):
        row["p50_ms"], row["speedup"] = lat["p50_ms"], lat["speedup"]
    return rows, latency[0]


def choose(rows: list[dict[str, Any]], objective: Objective) -> tuple[dict[str, Any], bool]:
    """The best row meeting the budget by the objective, else the one closest to it."""
    def cost(row: dict[str, Any]) -> float:
        if objective == Objective.SIZE:
            return float(row["bytes"])
        if objective == Objective.LATENCY:
            return float(row["p50_ms"])
        return float(row["p50_ms"]) * float(row["bytes"])

    met = [r for r in rows if r["met_budget"]]
    if met:
        return min(met, key=lambda r: (cost(r), r["trial"])), True
    return min(rows, key=lambda r: (r["drop"], r["trial"])), False
