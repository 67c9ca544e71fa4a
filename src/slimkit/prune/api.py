"""``slimkit.prune``: plan -> apply to a copy -> check the output shapes -> measure parameters,
MACs and size before and after (and, when asked, ONNX Runtime latency), with a report of every
group pruned and every layer left alone and why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from slimkit.data import Dataset, synthetic
from slimkit.errors import InputError, VerificationError
from slimkit.graph.plan import PrunePlan
from slimkit.model import Model, eval_mode
from slimkit.prune.config import PruneConfig
from slimkit.prune.structured import plan_pruning, structured_model
from slimkit.prune.unstructured import prune_unstructured
from slimkit.registry import Registry
from slimkit.train.finetune import FinetuneConfig

Method = Callable[[Model, PruneConfig, "Dataset | None"],
                  tuple[Model, PrunePlan, dict[str, Any]]]
METHODS: Registry[Method] = Registry("pruning mode")


@dataclass
class PruneResult:
    """The pruned model (a copy; the input model is unchanged), its plan and the report."""

    model: Model
    plan: PrunePlan
    sections: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.sections)

    def save(self, folder: str | Path) -> Path:
        """Write plan + safetensors weights into ``folder``; returns the folder."""
        from slimkit.prune.save import save_pruned

        return save_pruned(self.model, self.plan, folder).parent


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


def prune_once(model: Model, config: PruneConfig, data: Dataset | None) -> PruneResult:
    """One pruning step without fine-tuning (a regularised criterion sparse-trains first)."""
    source = sparse_trained_source(model, config, data)
    pruned, plan, sections = METHODS.get(config.mode.value)(source, config, data)
    report: dict[str, Any] = {"config": config.to_dict(), "seed": config.seed, **sections}
    if source is not model:
        report["sparse_training"] = source.meta.get("sparse_training")
    return PruneResult(pruned, plan, report)


def sparse_trained_source(model: Model, config: PruneConfig,
                          data: Dataset | None) -> Model:
    """The model the regularised criteria (slimming, group_lasso) prune: ``model`` trained
    with their penalty; ``model`` itself for every other criterion."""
    from slimkit.prune.importance import REGULARISED
    from slimkit.prune.regularise import SparseTraining, sparse_train

    if config.importance not in REGULARISED:
        return model
    return sparse_train(model, config.importance, data, SparseTraining(
        config.penalty, config.sparse_epochs, config.sparse_lr, config.batch_size, config.seed))


@METHODS.register("structured")
def _structured(model: Model, config: PruneConfig,
                data: Dataset | None) -> tuple[Model, PrunePlan, dict[str, Any]]:
    plan = plan_pruning(model, config, data)
    pruned = structured_model(model, plan)
    _check_outputs(model, pruned)
    sections: dict[str, Any] = {
        "size": size_section(model, pruned),
        "importance": {"criterion": config.importance, "group_reduce": config.group_reduce.value,
                       "scope": config.scope.value, "loss": plan.extra.get("importance_loss")},
        "groups": groups_section(plan),
        "skipped": skipped_section(plan),
    }
    return pruned, plan, sections


METHODS.register("unstructured")(prune_unstructured)


def size_section(before: Model, after: Model) -> dict[str, Any]:
    """Parameters, MACs (batch 1) and safetensors size, before and after."""
    from slimkit.analyse.stats import model_stats

    # in eval mode: a forward in training mode would update BatchNorm statistics
    with eval_mode(before.require_module("statistics")), \
            eval_mode(after.require_module("statistics")):
        a, b = model_stats(before), model_stats(after)
    return {"parameters_before": a.parameters, "parameters_after": b.parameters,
            "parameters_ratio": round(b.parameters / max(a.parameters, 1), 4),
            "macs_before": a.macs, "macs_after": b.macs,
            "macs_ratio": round(b.macs / max(a.macs, 1), 4),
            "bytes_before": a.size_bytes, "bytes_after": b.size_bytes}


def groups_section(plan: PrunePlan) -> list[dict[str, Any]]:
    """One row per group of coupled channels: its layers, channels before and kept."""
    return [{"group": g.id, "layers": _short(g.layers), "channels": g.channels,
             "kept": g.kept, "note": g.note or ""} for g in plan.groups]


def skipped_section(plan: PrunePlan) -> list[dict[str, str]]:
    """Every op the dependency graph did not understand, and every group left whole."""
    rows = [{"layer": s["layer"], "why": f"{s['type']}: {s['why']}"} for s in plan.skipped]
    rows += [{"layer": _short(g.layers), "why": g.note or ""} for g in plan.groups
             if g.note and g.note.startswith("left whole")]
    return rows


def _short(layers: tuple[str, ...], limit: int = 4) -> str:
    head = ", ".join(layers[:limit])
    return head + (f" (+{len(layers) - limit} more)" if len(layers) > limit else "")


def _check_outputs(model: Model, pruned: Model) -> None:
    """The pruned model must run and give outputs of the original shapes."""
    batch = synthetic(model.inputs, 2, seed=0, dynamic=16).first_batch(2)
    args = model.torch_args(batch)
    shapes = []
    for m in (model, pruned):
        module = m.require_module("pruning")
        with eval_mode(module), torch.no_grad():
            out = module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        shapes.append([tuple(o.shape) for o in outs if isinstance(o, torch.Tensor)])
    if shapes[0] != shapes[1]:
        raise VerificationError(f"pruning '{model.name}' changed its output shapes from "
                                f"{shapes[0]} to {shapes[1]}; this is a bug: please report it")


def measure_latency(model: Model, pruned: Model, threads: int = 1) -> dict[str, Any]:
    """ONNX Runtime latency of ``model`` and ``pruned`` measured side by side (batch 1);
    masks are baked first (the runtime sees the plain, zero-filled weights)."""
    from dataclasses import asdict

    from slimkit.bench.core import BenchConfig, benchmark
    from slimkit.graph.masks import finalize, has_masks

    if has_masks(pruned.require_module("measuring")):
        pruned = finalize(pruned)
    result = benchmark([model, pruned], BenchConfig(
        runtimes=("onnxruntime",), threads=(threads,), batches=(1,), rounds=5,
        round_seconds=0.2))
    rows = [asdict(row) for row in result.rows]
    return {"rows": rows, "speedup": round(rows[-1]["speedup"], 3), "threads": threads,
            "warnings": result.warnings}
