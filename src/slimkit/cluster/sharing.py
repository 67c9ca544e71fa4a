"""Weight sharing inside a module: every clustered weight is an entry of a small centroid table.

The sharing is a ``torch.nn.utils.parametrize`` parametrization: ``weight = table[index]``,
where ``table`` is ``[0, c_1, ..., c_K]`` per codebook (the leading 0 is a constant, so pruned
weights stay exactly zero) and ``index`` is fixed. Autograd's backward of the indexing sums the
gradients of all weights sharing a centroid into it, which is Deep Compression's centroid
update; the assignments never change. ``remove_parametrizations(..., leave_parametrized=True)``
bakes the shared values back into a plain weight.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from slimkit.cluster.config import ClusterConfig, Granularity
from slimkit.cluster.kmeans import kmeans_1d
from slimkit.errors import InputError

log = logging.getLogger(__name__)


class SharedCentroids(nn.Module):
    """The parametrization ``weight = pad(centroids, zero first)[index]``.

    Example:
        >>> p = SharedCentroids(torch.tensor([[0.5, -1.0]]), torch.tensor([[1, 0], [2, 1]]))
        >>> p(torch.zeros(2, 2)).tolist()
        [[0.5, 0.0], [-1.0, 0.5]]
    """

    flat_index: torch.Tensor

    def __init__(self, centroids: torch.Tensor, index: torch.Tensor) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids.clone())
        # flat positions into the padded (groups, K + 1) table
        groups, width = centroids.shape[0], centroids.shape[1] + 1
        offset = torch.arange(groups).repeat_interleave(index.numel() // groups) * width
        self.register_buffer("flat_index", index.reshape(-1) + offset)
        self.shape = tuple(index.shape)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        table = nn.functional.pad(self.centroids, (1, 0))
        return table.reshape(-1)[self.flat_index].reshape(self.shape).to(original.dtype)


def check_counts(name: str, weight: torch.Tensor, config: ClusterConfig) -> None:
    """Fail before any work when a layer has fewer (non-zero) weights than clusters."""
    values = weight[weight != 0] if config.preserve_sparsity else weight.reshape(-1)
    what = "non-zero weights" if config.preserve_sparsity else "weights"
    if values.numel() < config.clusters:
        raise InputError(f"layer '{name}' has {values.numel()} {what}, fewer than the "
                         f"{config.clusters} clusters asked for; lower clusters or exclude "
                         f"the layer (exclude=('name:{name}',))")


def codebook(name: str, weight: torch.Tensor,
             config: ClusterConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of one layer's weight: centroids ``(groups, K)`` and each weight's index into
    its group's table (0 = a kept zero, ``1..K`` = a centroid), shaped like the weight."""
    w = weight.detach().cpu().numpy().astype(np.float32)
    groups = w.shape[0] if config.granularity == Granularity.CHANNEL else 1
    rows = w.reshape(groups, -1)
    k = config.clusters
    centroids = np.zeros((groups, k), dtype=np.float32)
    index = np.zeros(rows.shape, dtype=np.int64)
    for g, row in enumerate(rows):
        keep = row != 0 if config.preserve_sparsity else np.ones(row.shape, dtype=bool)
        if not keep.any():
            continue
        if keep.sum() <= k:  # a small channel: every value its own centroid, exactly
            distinct, labels = np.unique(row[keep], return_inverse=True)
            centroids[g, :len(distinct)] = distinct
            log.info("'%s' channel %d has %d weights <= %d clusters: kept exactly", name, g,
                     int(keep.sum()), k)
        else:
            found, labels = kmeans_1d(row[keep], k, config.init, seed=config.seed,
                                      max_iter=config.max_iter)
            centroids[g] = found
        index[g, keep] = labels + 1
    return torch.from_numpy(centroids), torch.from_numpy(index.reshape(w.shape))


def unique_per_codebook(weight: torch.Tensor, granularity: Granularity,
                        zeros_excluded: bool) -> int:
    """The largest number of distinct (non-zero, if excluded) values of one codebook."""
    w = weight.detach()
    rows = w.reshape(w.shape[0], -1) if granularity == Granularity.CHANNEL else w.reshape(1, -1)
    counts = [int(torch.unique(r[r != 0] if zeros_excluded else r).numel()) for r in rows]
    return max(counts, default=0)
