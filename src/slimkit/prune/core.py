"""One pruning step: the method of the config's mode plans the pruning and applies it to a copy,
the outputs are checked, and the report gets sizes, groups and skipped layers. The verb around
it (``slimkit.prune.prune``) adds fine-tuning, a sensitivity scan and a latency measurement."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from slimkit.analyse.stats import size_comparison
from slimkit.data import Dataset, synthetic
from slimkit.errors import VerificationError
from slimkit.graph.plan import PrunePlan
from slimkit.model import Model, eval_mode
from slimkit.prune.config import PruneConfig
from slimkit.prune.structured import plan_pruning, structured_model
from slimkit.prune.unstructured import prune_unstructured
from slimkit.registry import Registry

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
        "size": size_comparison(model, pruned),
        "importance": {"criterion": config.importance, "group_reduce": config.group_reduce.value,
                       "scope": config.scope.value, "loss": plan.extra.get("importance_loss")},
        "groups": groups_section(plan),
        "skipped": skipped_section(plan),
    }
    return pruned, plan, sections


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


METHODS.register("unstructured")(prune_unstructured)
