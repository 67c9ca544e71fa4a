"""``slimkit.deep_compress``: Deep Compression (Han et al. 2016) as one recipe: gradual
magnitude pruning with fine-tuning -> k-means weight sharing with centroid fine-tuning ->
float16 storage of what is left -> entropy-coded ``.slim`` file; the file is loaded back and
checked to compute exactly what the in-memory model does, and every stage is measured (real
file sizes on disk, test accuracy)."""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from slimkit.cluster import ClusterConfig, Granularity, Init, cluster
from slimkit.compact import stages
from slimkit.compact.codecs import ALL_CODECS, HUFFMAN_ONLY, STDLIB_CODECS, check_codecs
from slimkit.compact.container import load_slim, write_slim
from slimkit.config import coerce_enums, config_to_dict
from slimkit.data import Dataset
from slimkit.errors import InputError, VerificationError
from slimkit.model import Model
from slimkit.prune.config import check_ratio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeepCompressConfig:
    """The whole recipe; every field maps onto a ``slimkit compact`` flag.

    Args:
        sparsity: final share of Conv/Linear weights pruned, in [0, 1).
        prune_scope: magnitude threshold per ``layer`` or ``global`` over all layers.
        prune_epochs: epochs of fine-tuning during gradual pruning (0: prune once).
        clusters, init, granularity: the weight sharing (see ``ClusterConfig``).
        cluster_epochs: epochs of centroid fine-tuning.
        lr, cluster_lr: Adam learning rates of the two fine-tunings.
        half_precision: round codebooks, biases and norms to float16 values (stored in half
            the space); accuracy is measured after it.
        exclude: layer rules left dense and unclustered.
        codecs: stream codecs measured for every stream of the file (smallest kept).
        batch_size, seed: fine-tuning batches and their order.

    Example:
        >>> DeepCompressConfig(sparsity=0.9, clusters=16).cluster_config().bits
        4
    """

    sparsity: float = 0.9
    prune_scope: str = "global"
    prune_epochs: int = 30
    clusters: int = 16
    init: Init = Init.LINEAR
    granularity: Granularity = Granularity.LAYER
    cluster_epochs: int = 10
    lr: float = 1e-3
    cluster_lr: float = 1e-4
    half_precision: bool = True
    exclude: tuple[str, ...] = ()
    codecs: tuple[str, ...] = ALL_CODECS
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        coerce_enums(self, {"init": Init, "granularity": Granularity})
        check_ratio(self.sparsity, "sparsity")
        if self.prune_scope not in ("layer", "global"):
            raise InputError(f"prune_scope must be 'layer' or 'global', got {self.prune_scope!r}")
        if self.prune_epochs < 0 or self.cluster_epochs < 0:
            raise InputError("prune_epochs and cluster_epochs must be >= 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive number, got {self.lr!r}")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "codecs", check_codecs(tuple(self.codecs)))
        self.cluster_config()  # validates clusters, cluster_lr, batch_size

    def cluster_config(self) -> ClusterConfig:
        return ClusterConfig(clusters=self.clusters, init=self.init,
                             granularity=self.granularity, preserve_sparsity=True,
                             exclude=self.exclude, epochs=self.cluster_epochs,
                             lr=self.cluster_lr, batch_size=self.batch_size, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeepCompressConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"unknown deep compression fields {unknown}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**{**data, "exclude": tuple(data.get("exclude", ())),
                      "codecs": tuple(data.get("codecs", ALL_CODECS))})


@dataclass
class DeepCompressResult:
    """The compressed model (as loaded back from the file), the file, and the report."""

    model: Model
    path: Path | None
    sections: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.sections)


def deep_compress(model: Model, data: Dataset, config: DeepCompressConfig | None = None, *,
                  eval_data: Dataset | None = None,
                  output: str | Path | None = None) -> DeepCompressResult:
    """Prune, cluster and entropy-code ``model`` into a ``.slim`` file, verified.

    Args:
        model: a torch model whose source rebuilds its architecture (``builtin:NAME`` or a
            factory spec); it is not modified.
        data: labelled training examples for the fine-tuning stages.
        config: the recipe.
        eval_data: labelled held-out examples for the accuracies (default: ``data``).
        output: the ``.slim`` file to write; by default a temporary one (sizes are still
            measured on disk) that is removed, and ``result.path`` is None.

    Example:
        >>> import numpy as np
        >>> from slimkit.testing import tiny_model
        >>> ds = Dataset({"input": np.eye(8, dtype=np.float32)}, labels=np.arange(8) % 4)
        >>> r = deep_compress(tiny_model("mlp"), ds, DeepCompressConfig(
        ...     sparsity=0.5, clusters=4, prune_epochs=1, cluster_epochs=1))
        >>> r.sections["verify"]["max_abs_difference"]
        0.0
    """
    config = config or DeepCompressConfig()
    eval_data = eval_data or data
    if data.labels is None or eval_data.labels is None:
        raise InputError("deep compression fine-tunes and measures accuracy: the data needs "
                         "labels")
    module = model.require_module("deep compression")
    _check_layers(module, config)  # before minutes of fine-tuning, not after
    report: dict[str, Any] = {"config": config.to_dict(), "seed": config.seed,
                              "eval_data": eval_data.name, "stages": []}
    base_bytes = stages.fp32_safetensors_bytes(module)

    def stage(name: str, current: Model, **extra: Any) -> None:
        size = stages.slim_bytes(current, config.codecs)["file_bytes"]
        row = {"stage": name, "accuracy": stages.accuracy_of(current, eval_data),
               "slim_bytes": size, "ratio": round(base_bytes / size, 2),
               **{f"{k}_bytes": stages.slim_bytes(current, v)["file_bytes"]
                  for k, v in (("huffman", HUFFMAN_ONLY), ("stdlib", STDLIB_CODECS))}, **extra}
        report["stages"].append(row)
        log.info("deep compression: %s", row)

    stage("original", model, fp32_safetensors_bytes=base_bytes)
    pruned, prune_losses = stages.gradual_prune(
        model, data, sparsity=config.sparsity, epochs=config.prune_epochs,
        scope=config.prune_scope, exclude=config.exclude, lr=config.lr,
        batch_size=config.batch_size, seed=config.seed)
    stage("pruned", pruned, losses=[round(x, 5) for x in prune_losses[-3:]])
    clustered = cluster(pruned, config.cluster_config(), data)
    final = clustered.model
    stage("clustered", final)
    if config.half_precision:
        final = stages.to_half_precision(final)
        stage("float16 rest", final)
    report["clusters"] = clustered.sections["layers"]
    report["codecs"] = {name: stages.slim_bytes(final, codecs)
                        for name, codecs in (("huffman", HUFFMAN_ONLY),
                                             ("stdlib", STDLIB_CODECS),
                                             ("best", config.codecs))}
    with tempfile.TemporaryDirectory(prefix="slimkit-compact-") as tmp:
        path = Path(output) if output is not None else Path(tmp) / "model.slim"
        info = write_slim(final, path, codecs=config.codecs)
        loaded = load_slim(path)
        difference = stages.identical_outputs(final, loaded, eval_data)
    if difference != 0.0:
        raise VerificationError(f"the model loaded from '{path}' differs from the compressed "
                                f"model by up to {difference:g}; this is a bug")
    accuracy = stages.accuracy_of(loaded, eval_data)
    report["verify"] = {"max_abs_difference": difference, "loaded_accuracy": accuracy}
    report["file"] = {**info.to_dict(), "path": str(path) if output is not None else None,
                      "fp32_safetensors_bytes": base_bytes,
                      "ratio": round(base_bytes / info.file_bytes, 2)}
    before = report["stages"][0]["accuracy"]
    report["accuracy"] = {"before": before, "after": accuracy,
                          "drop_points": round(100 * (before - accuracy), 3)}
    return DeepCompressResult(loaded, Path(output) if output is not None else None, report)


def _check_layers(module: Any, config: DeepCompressConfig) -> None:
    """Every layer to cluster has at least ``clusters`` weights (pruning only lowers that)."""
    from dataclasses import replace

    from slimkit.cluster.sharing import check_counts
    from slimkit.graph.masks import masked_layers

    dense = replace(config.cluster_config(), preserve_sparsity=False)
    layers = masked_layers(module, config.exclude)
    if not layers:
        raise InputError("the model has no Conv or Linear layer to compress after the "
                         "exclusions")
    for name, sub in layers:
        check_counts(name, cast(torch.Tensor, sub.weight), dense)
