"""Sensitivity scan: prune each group of coupled channels alone at several ratios, measure the
metric on data, and tabulate the drop; ``layer_ratios`` turns the table into per-group ratios
for a target overall ratio (robust groups lose more, sensitive ones less).

One group alone is cut out of the plan for all groups at the same ratio: the channels the full
plan removes from that group, and no others (so rounding and the no-empty-layer rescue are the
full planner's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.evaluate.torch_metric import metric
from slimkit.graph.channels import ChannelGraph, ChannelGroup
from slimkit.graph.plan import PrunePlan
from slimkit.graph.trace import build_graph
from slimkit.model import Model
from slimkit.progress import progress
from slimkit.prune.config import PruneConfig, PruneMode, Scope, check_ratio
from slimkit.prune.structured import plan_pruning, structured_model

Metric = Callable[[Model, Dataset], float]


@dataclass
class SensitivityResult:
    """The metric of the unpruned model and one row per (group, ratio): the group's first
    layers, its channels, the ratio, the channels kept, the metric and its drop."""

    baseline: float
    metric: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    private_layer: dict[int, str] = field(default_factory=dict)  # group -> a layer only it has

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "metric": self.metric, "rows": self.rows}

    def layer_ratios(self, target: float) -> tuple[tuple[str, float], ...]:
        """Per-group ratios whose channel-weighted mean is about ``target``, as ``(rule,
        ratio)`` pairs for ``PruneConfig.layer_ratios``: every group gets the largest scanned
        ratio whose drop stays under one common threshold, the smallest threshold that
        reaches ``target``. Groups without a layer of their own cannot be named by a rule:
        they keep ``PruneConfig.ratio`` (counted as ``target`` here).

        Example:
            >>> r = SensitivityResult(1.0, "accuracy", [
            ...     {"group": 0, "channels": 8, "ratio": 0.5, "drop": 0.0},
            ...     {"group": 1, "channels": 8, "ratio": 0.5, "drop": 0.3}],
            ...     private_layer={0: "bn0", 1: "bn1"})
            >>> r.layer_ratios(0.25)
            (('name:bn0', 0.5), ('name:bn1', 0.0))
        """
        check_ratio(target, "target ratio")
        curves: dict[int, list[tuple[float, float]]] = {}
        channels: dict[int, int] = {}
        for row in self.rows:
            drop = max(float(row["drop"]), 0.0)  # a gain counts as no drop
            curves.setdefault(row["group"], [(0.0, 0.0)]).append((row["ratio"], drop))
            channels[row["group"]] = row["channels"]
        if not curves:
            return ()
        thresholds = sorted({drop for curve in curves.values() for _, drop in curve})
        total = sum(channels.values())
        chosen: dict[int, float] = {}
        for threshold in thresholds:
            chosen = {g: max(r for r, d in curve if d <= threshold) if g in self.private_layer
                      else target for g, curve in curves.items()}
            if sum(chosen[g] * channels[g] for g in chosen) / total >= target - 1e-9:
                break
        return tuple((f"name:{self.private_layer[g]}", ratio) for g, ratio in chosen.items()
                     if g in self.private_layer)


def sensitivity_scan(model: Model, data: Dataset, config: PruneConfig | None = None,
                     ratios: tuple[float, ...] = (0.25, 0.5, 0.75), *,
                     train_data: Dataset | None = None,
                     metric_fn: Metric | None = None) -> SensitivityResult:
    """Prune every prunable group of ``model`` alone at each of ``ratios``; measure the metric.

    Args:
        model: a torch model (not modified).
        data: evaluation examples: accuracy with labels, otherwise agreement with the
            unpruned model's top-1 (classifiers) or output cosine similarity.
        config: importance, rounding, exclusions (its ratio and layer_ratios are ignored).
        ratios: the ratios to scan, each in [0, 1).
        train_data: data for data-driven importance (default ``data``); slimming and
            group_lasso sparse-train on it once and the trained model is scanned.
        metric_fn: ``metric_fn(model, data) -> float``, higher is better (overrides the
            built-in metric).

    Example:
        >>> import numpy as np
        >>> from slimkit.testing import tiny_model
        >>> x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
        >>> scan = sensitivity_scan(tiny_model("cnn"), Dataset({"input": x}),
        ...                         PruneConfig(round_to=2), ratios=(0.5,))
        >>> [(row["layers"], row["kept"]) for row in scan.rows]
        [('conv, bn, fc', 4)]
    """
    config = replace(config or PruneConfig(), scope=Scope.LAYER, layer_ratios=())
    if config.mode != PruneMode.STRUCTURED:
        raise InputError("the sensitivity scan prunes channels (structured mode)")
    for ratio in ratios:
        check_ratio(ratio, "scanned ratio")
    from slimkit.prune.core import sparse_trained_source

    train_data = train_data if train_data is not None else data
    model = sparse_trained_source(model, config, train_data)
    reference = model
    score = metric_fn or (lambda m, d: metric(m, d, reference=reference))
    baseline = score(model, data)
    graph = build_graph(model, config.exclude)
    groups = [g for g in graph.groups() if g.prunable]
    result = SensitivityResult(baseline, _metric_name(metric_fn, data),
                               private_layer=_private_layers(groups))
    work = [(ratio, group) for ratio in ratios for group in groups]
    plans: dict[float, PrunePlan] = {}
    for ratio, group in progress(work, "sensitivity scan", len(work)):
        if ratio not in plans:
            plans[ratio] = plan_pruning(model, replace(config, ratio=ratio), train_data)
        alone = group_alone(graph, group, plans[ratio])
        kept = next(g.kept for g in plans[ratio].groups if g.id == group.id)
        value = score(structured_model(model, alone), data) if alone.layers else baseline
        result.rows.append({"group": group.id, "layers": ", ".join(group.layers[:3]),
                            "channels": len(group.classes), "ratio": ratio, "kept": kept,
                            "metric": round(value, 5), "drop": round(baseline - value, 5)})
    return result


def group_alone(graph: ChannelGraph, group: ChannelGroup, plan: PrunePlan) -> PrunePlan:
    """The part of ``plan`` that removes channels of ``group`` only."""
    mine = set(group.classes)
    edits = []
    for edit in plan.layers:
        node = graph.layers[edit.name]
        out_keep = _keep_others(graph.classes_of(node.out_vars), edit.out_keep, mine)
        in_keep = (_keep_others(graph.classes_of(node.in_vars), edit.in_keep, mine)
                   if node.in_vars is not None else None)
        if out_keep is not None or in_keep is not None:
            edits.append(replace(edit, out_keep=out_keep, in_keep=in_keep))
    return replace(plan, layers=tuple(edits))


def _keep_others(classes: list[int], keep: tuple[int, ...] | None,
                 mine: set[int]) -> tuple[int, ...] | None:
    """Positions kept when only the removals of classes in ``mine`` apply."""
    if keep is None:
        return None
    kept = set(keep)
    result = tuple(i for i, cls in enumerate(classes) if i in kept or cls not in mine)
    return None if len(result) == len(classes) else result


def _private_layers(groups: list[ChannelGroup]) -> dict[int, str]:
    """For each prunable group, a layer that belongs to no other prunable group (a rule naming
    it sets the ratio of that group only), when there is one: norm layers usually."""
    count: dict[str, int] = {}
    for group in groups:
        for name in group.layers:
            count[name] = count.get(name, 0) + 1
    return {g.id: next(n for n in g.layers if count[n] == 1) for g in groups
            if any(count[n] == 1 for n in g.layers)}


def _metric_name(metric_fn: Metric | None, data: Dataset) -> str:
    if metric_fn is not None:
        return getattr(metric_fn, "__name__", "user metric")
    return ("accuracy" if data.labels is not None
            else "agreement with the unpruned model (top-1, or output cosine)")


def config_from_scan(config: PruneConfig, scan: SensitivityResult) -> PruneConfig:
    """``config`` with per-group ratios from ``scan`` reaching ``config.ratio`` overall.

    Example:
        >>> scan = SensitivityResult(1.0, "accuracy", [
        ...     {"group": 0, "channels": 8, "ratio": 0.5, "drop": 0.2}], private_layer={0: "bn"})
        >>> config_from_scan(PruneConfig(ratio=0.5), scan).layer_ratios
        (('name:bn', 0.5),)
    """
    if config.scope != Scope.LAYER:
        raise InputError("per-layer ratios from a sensitivity scan need scope 'layer'")
    return replace(config, layer_ratios=scan.layer_ratios(config.ratio))


def scan_section(scan: SensitivityResult, config: PruneConfig) -> dict[str, Any]:
    """The scan for the pruning report, with the per-group ratios it led to."""
    return {**scan.to_dict(), "layer_ratios": [list(pair) for pair in config.layer_ratios]}
