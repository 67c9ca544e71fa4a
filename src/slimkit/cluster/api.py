"""``slimkit.cluster``: k-means weight sharing of Conv/Linear layers, centroid fine-tuning with
fixed assignments, checks of the result, and a report."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.cluster.config import ClusterConfig
from slimkit.cluster.sharing import SharedCentroids, check_counts, codebook, unique_per_codebook
from slimkit.data import Dataset
from slimkit.errors import InputError, VerificationError
from slimkit.model import Model
from slimkit.train.loop import Schedule, TrainConfig, Trainer

log = logging.getLogger(__name__)


@dataclass
class ClusterResult:
    """The clustered model (a copy with plain weights; the input is unchanged) and the report."""

    model: Model
    sections: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.sections)


def cluster(model: Model, config: ClusterConfig | None = None,
            data: Dataset | None = None) -> ClusterResult:
    """Share the weights of every Conv/Linear layer among ``config.clusters`` centroids.

    Args:
        model: a torch model (pruning masks, if any, are baked: their zeros stay zero with
            ``preserve_sparsity``); it is not modified.
        config: clusters, initialisation, granularity, sparsity, fine-tuning.
        data: labelled examples for fine-tuning the centroids (``config.epochs > 0``).

    Example:
        >>> from slimkit.testing import tiny_model
        >>> r = cluster(tiny_model("mlp"), ClusterConfig(clusters=4))
        >>> [(row["layer"], row["unique_values"]) for row in r.sections["layers"]]
        [('fc1', 4), ('fc2', 4)]
    """
    from slimkit.graph.masks import bake_masks, copy_masked, masked_layers
    from slimkit.progress import progress

    config = config or ClusterConfig()
    if config.epochs and data is None:
        raise InputError("fine-tuning the centroids (epochs > 0) needs labelled data")
    module = bake_masks(copy_masked(model.require_module("clustering")))
    layers = masked_layers(module, config.exclude)
    if not layers:
        raise InputError(f"'{model.name}' has no Conv or Linear layer to cluster after the "
                         "exclusions")
    originals = {name: _weight(sub).detach().clone() for name, sub in layers}
    for name, weight in originals.items():
        check_counts(name, weight, config)
    for name, sub in progress(layers, "clustering layers", len(layers)):
        centroids, index = codebook(name, originals[name], config)
        parametrize.register_parametrization(sub, "weight", SharedCentroids(centroids, index))
        cast(Any, sub).parametrizations.weight.original.requires_grad_(False)
    clustered = replace(model, module=module, name=f"{model.name}-clustered",
                        meta={**model.meta, "clustered": config.to_dict()})
    losses: list[float] = []
    if config.epochs and data is not None:
        losses = Trainer(clustered, data, TrainConfig(
            config.epochs, config.lr, batch_size=config.batch_size, seed=config.seed,
            schedule=Schedule.CONSTANT, threads=1), parameters=_trainable(module),
            description="fine-tuning centroids").run()
    for _, sub in layers:
        parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
    rows = _check(layers, originals, config)
    sections = {"config": config.to_dict(), "seed": config.seed, "layers": rows,
                "fine_tune": {"epochs": config.epochs, "losses": [round(x, 5) for x in losses]},
                "bits": config.bits,
                "skipped": [{"layer": n, "why": "excluded by a rule"}
                            for n, _ in masked_layers(module, ()) if n not in originals]}
    return ClusterResult(clustered, sections)


def _weight(layer: nn.Module) -> torch.Tensor:
    return cast(torch.Tensor, layer.weight)


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    """Centroids, biases and norms: every parameter but the parametrizations' originals."""
    return [p for name, p in module.named_parameters() if not name.endswith(".original")]


def _check(layers: list[tuple[str, nn.Module]], originals: dict[str, torch.Tensor],
           config: ClusterConfig) -> list[dict[str, Any]]:
    """Each codebook holds at most ``clusters`` values and kept zeros are still zero."""
    from slimkit.evaluate.metrics import sqnr_db

    rows = []
    for name, sub in layers:
        weight, before = _weight(sub).detach(), originals[name]
        unique = unique_per_codebook(weight, config.granularity, config.preserve_sparsity)
        if unique > config.clusters:
            raise VerificationError(f"layer '{name}' has {unique} distinct values after "
                                    f"clustering into {config.clusters}; this is a bug")
        if config.preserve_sparsity and bool((weight[before == 0] != 0).any()):
            raise VerificationError(f"layer '{name}' lost zeros while clustering with "
                                    "preserve_sparsity; this is a bug")
        rows.append({"layer": name, "weights": weight.numel(), "clusters": config.clusters,
                     "granularity": config.granularity.value, "bits": config.bits,
                     "unique_values": unique,
                     "sparsity": round(float((weight == 0).float().mean()), 4),
                     "sqnr_db": round(sqnr_db(before.numpy(), weight.numpy()), 2)})
    return rows
