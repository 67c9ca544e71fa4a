"""Iterative pruning: reach the ratio in ``iterations`` steps along the cubic schedule of Zhu &
Gupta, fine-tuning (``slimkit.train.finetune``) after each step."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.evaluate.torch_metric import metric
from slimkit.model import Model
from slimkit.prune.config import PruneConfig, PruneMode
from slimkit.train.finetune import finetune
from slimkit.train.hooks import FinetuneConfig, TrainHooks

if TYPE_CHECKING:
    from slimkit.prune.core import PruneResult


def prune_and_finetune(model: Model, config: PruneConfig | None = None,
                       data: Dataset | None = None, finetune_config: FinetuneConfig | None = None,
                       hooks: TrainHooks | None = None, *,
                       eval_data: Dataset | None = None) -> PruneResult:
    """Prune ``model`` in ``finetune_config.iterations`` steps, fine-tuning after each.

    Step ``k`` of ``n`` brings the removed share to ``cubic_sparsity(k, ratio, n)`` of the
    original (most of the pruning early, while there is training left to recover). A
    structured result carries one plan from the original architecture to the final one (the
    steps' plans composed), so it saves and loads like a one-shot result. ``eval_data``
    (labels: accuracy; otherwise agreement with the original) is measured before fine-tuning
    and after every step, into the report's ``finetune`` section.

    Example:
        >>> import numpy as np
        >>> from slimkit.testing import tiny_model
        >>> x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
        >>> data = Dataset({"input": x}, np.arange(16) % 4)
        >>> r = prune_and_finetune(tiny_model("cnn"), PruneConfig(ratio=0.5, round_to=2), data,
        ...                        FinetuneConfig(epochs=1, iterations=2))
        >>> r.model.module.conv.out_channels, len(r.sections["finetune"]["steps"])
        (4, 2)
    """
    from slimkit.analyse.stats import size_comparison
    from slimkit.graph.masks import finalize, has_masks
    from slimkit.graph.plan import compose_plans
    from slimkit.prune.core import PruneResult, groups_section, prune_once

    config, settings = config or PruneConfig(), finetune_config or FinetuneConfig()
    if data is None or len(data) == 0:
        raise InputError("fine-tuning needs training data (a Dataset, or --data)")
    original = metric(model, eval_data, model) if eval_data is not None else None
    current, plan, steps, last = model, None, [], None
    for k in range(1, settings.iterations + 1):
        step = _step_config(config, k, settings.iterations)
        if has_masks(current.require_module("pruning")):
            current = finalize(current)  # zeros rank lowest: earlier masks are kept
        last = prune_once(current, step, data)
        structured = config.mode == PruneMode.STRUCTURED
        plan = compose_plans(plan, last.plan) if structured and plan else last.plan
        row: dict[str, Any] = {"step": k, "ratio": round(_cumulative(config.ratio, k,
                                                                     settings.iterations), 4)}
        current = last.model
        if eval_data is not None:
            row["metric_pruned"] = round(metric(current, eval_data, model), 5)
        if settings.epochs:
            trained = finetune(current, data, replace(settings, seed=settings.seed + k - 1),
                               hooks)
            current, row["losses"] = trained.model, [round(v, 5) for v in trained.losses]
            if eval_data is not None:
                row["metric_finetuned"] = round(metric(current, eval_data, model), 5)
        steps.append(row)
    if last is None or plan is None:
        raise InputError("no pruning step ran")  # unreachable: iterations >= 1
    sections = {**last.sections, "config": config.to_dict()}
    if config.mode == PruneMode.STRUCTURED:
        sections.update(size=size_comparison(model, current), groups=groups_section(plan))
    final_metric = steps[-1].get("metric_finetuned", steps[-1].get("metric_pruned"))
    sections["finetune"] = {"config": settings.to_dict(), "steps": steps,
                            "metric_original": original, "metric_final": final_metric,
                            "loss": "custom" if hooks and hooks.loss_fn else "cross-entropy"}
    return PruneResult(current, plan, sections)


def _cumulative(final: float, k: int, n: int) -> float:
    """The share removed after step ``k`` of ``n`` (the cubic schedule)."""
    from slimkit.train.schedules import cubic_sparsity

    if k <= 0 or final == 0:
        return 0.0
    return final if n == 1 else cubic_sparsity(k, final, n)


def _step_config(config: PruneConfig, k: int, n: int) -> PruneConfig:
    """The config of step ``k`` of ``n``: structured steps remove a share of the channels
    left (the model shrinks at every step), unstructured steps mask a share of all weights."""
    def share(final: float) -> float:
        now = _cumulative(final, k, n)
        if config.mode == PruneMode.UNSTRUCTURED:
            return now
        return 1.0 - (1.0 - now) / (1.0 - _cumulative(final, k - 1, n))

    return replace(config, ratio=share(config.ratio),
                   layer_ratios=tuple((rule, share(r)) for rule, r in config.layer_ratios))
