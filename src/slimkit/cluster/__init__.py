"""Weight sharing by k-means clustering (Deep Compression's second stage): per layer or per
output channel, linear/density/k-means++ seeds, sparsity kept, centroids fine-tuned."""

import sys
import types
from typing import Any

from slimkit.cluster.api import ClusterResult, cluster
from slimkit.cluster.config import ClusterConfig, Granularity
from slimkit.cluster.kmeans import Init, kmeans_1d

__all__ = ["ClusterConfig", "ClusterResult", "Granularity", "Init", "cluster", "kmeans_1d"]


class _CallableModule(types.ModuleType):
    """Importing any ``slimkit.cluster.*`` module sets the attribute ``slimkit.cluster`` to this
    package, hiding the lazily exported verb of the same name; the package therefore calls the
    verb, so ``slimkit.cluster(model, config)`` works however the package was imported."""

    def __call__(self, model: Any, config: Any = None, data: Any = None) -> ClusterResult:
        return cluster(model, config, data)


sys.modules[__name__].__class__ = _CallableModule
