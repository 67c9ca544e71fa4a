"""The second stage of a search: proxy points on the proxy Pareto front become recipes and are
compressed for real (fine-tuned, exported or quantized, verified in ONNX Runtime) in bisection
order along the front, cheapest first: a point that meets the budget sends the next try to the
cheaper half, one that misses to the dearer half, so a few fine-tuning runs find the cheapest
point that holds the budget. The finalists are measured side by side with the original and
ranked."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.data import Dataset
from slimkit.evaluate.metrics import UserMetric
from slimkit.model import Model
from slimkit.prune import PruneConfig
from slimkit.quantize import QuantizeConfig, QuantMode
from slimkit.recipe import FinetuneConfig, Recipe, Stage, compress
from slimkit.recipe.run import measure_side_by_side
from slimkit.search.config import Objective, SearchConfig
from slimkit.search.space import SearchSpace
from slimkit.search.study import CONSTRAINT
from slimkit.train.batchnorm import BatchNormConfig


def point_recipe(space: SearchSpace, params: dict[str, Any], config: SearchConfig,
                 name: str) -> Recipe:
    """The replayable recipe of one search point."""
    stages = []
    rules = space.prune_rules(params)
    if rules:
        stages.append(Stage("prune", PruneConfig(ratio=0.0, layer_ratios=rules,
                                                 importance="l2", seed=config.seed)))
        if config.bn_batches:  # as the proxy trials judged it
            stages.append(Stage("batchnorm", BatchNormConfig(config.bn_batches,
                                                             seed=config.seed)))
        if config.finetune_epochs:
            stages.append(Stage("finetune", FinetuneConfig(
                epochs=config.finetune_epochs, lr=config.finetune_lr, seed=config.seed,
                workers=config.finetune_workers)))
    if params.get("int8"):
        exclude = tuple(f"name:{layer}" for layer in space.float_layers(params))
        stages.append(Stage("quantize", QuantizeConfig(mode=QuantMode(space.int8_mode),
                                                       per_channel=True, exclude=exclude)))
    else:
        stages.append(Stage("export", _export_config()))
    return Recipe(tuple(stages), name=name, max_drop=config.max_drop,
                  description="found by slimkit compress --auto")


def _export_config() -> Any:
    from slimkit.export.onnx import ExportConfig

    return ExportConfig()


def candidates(trials: list[Any]) -> tuple[list[Any], bool]:
    """The proxy-feasible trials on their Pareto front, cheapest first, and True; with no
    feasible trial, all trials by smallest drop, and False."""
    feasible = [t for t in trials if t.user_attrs.get(CONSTRAINT, 1.0) <= 0]
    if not feasible:
        return sorted(trials, key=lambda t: (t.values[-1], t.number)), False
    return sorted(pareto(feasible, lambda t: tuple(t.values)),
                  key=lambda t: (t.values[0], t.values[-1], t.number)), True


def bisect_front(count: int, met: Callable[[int], bool | None], size: int) -> None:
    """Call ``met(i)`` on up to ``count`` indices of a front of ``size`` points (cheapest
    first) in bisection order; ``met`` returns whether point i held the budget, or None to
    stop.

    Example:
        >>> tried = []
        >>> def met(i):
        ...     tried.append(i)
        ...     return i >= 5
        >>> bisect_front(10, met, 8); tried
        [3, 5, 4]
    """
    lo, hi = 0, size - 1
    while lo <= hi and count > 0:
        mid = (lo + hi) // 2
        ok = met(mid)
        if ok is None:
            return
        lo, hi = (lo, mid - 1) if ok else (mid + 1, hi)
        count -= 1


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


@dataclass
class Finalists:
    """Compresses proxy points for real (the recipe of each), verifies them and keeps a row
    per point; ``measure`` times them all beside the original at the end."""

    model: Model
    space: SearchSpace
    config: SearchConfig
    folder: Path
    data: Dataset
    train: Dataset | None = None
    metric: UserMetric | None = None
    deadline: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def run(self, trial: Any, number: int, stage: str) -> bool | None:
        """Compress one point (``number`` names it in the report); whether it met the
        budget, or None when the deadline has passed (and some point was already done)."""
        if self.deadline is not None and time.monotonic() > self.deadline and self.rows:
            return None
        self.folder.mkdir(exist_ok=True)
        recipe = point_recipe(self.space, trial.params, self.config, f"search-trial-{number}")
        result = compress(self.model, recipe, self.folder / f"trial-{number}", self.data,
                          self.train, metric=self.metric, measure=False,
                          threads=self.config.threads)
        check = result.sections["verification"]
        self.rows.append({
            "trial": number, "stage": stage, "params": dict(trial.params),
            "proxy": {k: trial.user_attrs.get(k) for k in ("macs", "bytes", "drop")},
            "metric": check["compressed"], "drop": check["drop"],
            "bytes": result.sections["size"]["onnx_bytes"],
            "met_budget": bool(check["drop"] <= self.config.max_drop + 1e-12),
            "path": str(result.model.onnx_path), "recipe": recipe.to_dict(),
            "model": result.model})
        return bool(self.rows[-1]["met_budget"])

    def bisect(self, trials: list[Any], count: int, stage: str, offset: int = 0) -> None:
        """Up to ``count`` of ``trials`` (cheapest first) in bisection order."""
        bisect_front(count, lambda i: self.run(trials[i], offset + trials[i].number, stage),
                     len(trials))

    def in_order(self, trials: list[Any], count: int, stage: str) -> None:
        for trial in trials[:count]:
            if self.run(trial, trial.number, stage) is None:
                return

    def measure(self) -> dict[str, Any]:
        """Time every row beside the original (ONNX Runtime, batch 1, interleaved); the
        original's timing."""
        latency = measure_side_by_side([self.model, *(row["model"] for row in self.rows)],
                                       self.config.threads)
        for row, lat in zip(self.rows, latency[1:], strict=True):
            row["p50_ms"], row["speedup"] = lat["p50_ms"], lat["speedup"]
        return latency[0]


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
