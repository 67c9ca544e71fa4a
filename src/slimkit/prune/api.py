"""``slimkit.prune``: an optional sensitivity scan, one pruning step (``core``) or iterative
steps with fine-tuning (``iterative``), and an optional latency measurement, with a report of
every group pruned and every layer left alone and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.model import Model
from slimkit.prune.config import PruneConfig
from slimkit.prune.core import PruneResult, prune_once
from slimkit.train.hooks import FinetuneConfig


@dataclass(frozen=True)
class AdvancedPrune:
    """What may happen around the pruning itself.

    Args:
        sensitivity_ratios: scan every group alone at these ratios first (on ``eval_data``,
            else ``data``) and prune each group by how much it can lose, reaching
            ``config.ratio`` overall (``scope`` layer); () for no scan.
        measure: benchmark ONNX Runtime latency of the original and the pruned model
            (exports both; seconds of work).
        threads: threads for that measurement.
    """

    sensitivity_ratios: tuple[float, ...] = ()
    measure: bool = False
    threads: int = 1


def prune(model: Model, config: PruneConfig | None = None, data: Dataset | None = None, *,
          finetune: FinetuneConfig | None = None, eval_data: Dataset | None = None,
          advanced: AdvancedPrune | None = None) -> PruneResult:
    """Prune ``model``: remove channels (structured) or mask weights (unstructured).

    Args:
        model: a torch model; it is not modified.
        config: mode, ratio, scope, importance, rounding, exclusions.
        data: examples for data-driven importance (taylor, saliency; slimming and
            group_lasso train on it first) and for fine-tuning.
        finetune: prune in ``finetune.iterations`` steps, fine-tuning on ``data`` (labels,
            cross-entropy) after each; see ``prune_and_finetune`` for a custom loss.
        eval_data: data the metric is measured on (before and after fine-tuning, and by a
            sensitivity scan).
        advanced: a sensitivity scan first, a latency measurement after.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> r = prune(tiny_model("cnn"), PruneConfig(ratio=0.5, round_to=4))
        >>> r.model.module.conv.out_channels, r.sections["size"]["macs_ratio"]
        (4, 0.5)
    """
    from slimkit.prune.sensitivity import config_from_scan, scan_section, sensitivity_scan

    config, advanced = config or PruneConfig(), advanced or AdvancedPrune()
    model.require_module("pruning")
    tuning = finetune is not None and (finetune.epochs > 0 or finetune.iterations > 1)
    scan_data = eval_data if eval_data is not None else data
    if (tuning or advanced.sensitivity_ratios) and scan_data is None:
        raise InputError("fine-tuning, iterative pruning and a sensitivity scan need --data "
                         "(examples to train and measure on)")
    scan = None
    if advanced.sensitivity_ratios and scan_data is not None:
        scan = sensitivity_scan(model, scan_data, config, advanced.sensitivity_ratios,
                                train_data=data)
        config = config_from_scan(config, scan)
    if tuning:
        from slimkit.prune.iterative import prune_and_finetune

        result = prune_and_finetune(model, config, data, finetune, eval_data=eval_data)
    else:
        result = prune_once(model, config, data)
    if scan is not None:
        result.sections["sensitivity"] = scan_section(scan, config)
    if advanced.measure:
        result.sections["latency"] = measure_latency(model, result.model, advanced.threads)
    return result


def measure_latency(model: Model, pruned: Model, threads: int = 1) -> dict[str, Any]:
    """ONNX Runtime latency of ``model`` and ``pruned`` side by side (batch 1); masks are baked
    first (the runtime sees the plain, zero-filled weights)."""
    from slimkit.bench.core import compare_latency
    from slimkit.graph.masks import finalize, has_masks

    if has_masks(pruned.require_module("measuring")):
        pruned = finalize(pruned)
    return compare_latency(model, pruned, threads)
