"""One-dimensional k-means of a layer's weights, with Deep Compression's three initialisations.

The iterations are scikit-learn's ``KMeans`` (Lloyd, and its k-means++ seeding). ``linear`` and
``density`` seeds are written here because scikit-learn has neither: they are two lines each
(evenly spaced over the weights' range; evenly spaced over their cumulative distribution) and
are passed to ``KMeans`` as its initial centres.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable

import numpy as np

from slimkit.registry import Registry


class Init(str, enum.Enum):
    LINEAR = "linear"  # evenly over [min, max]: keeps the rare large weights (Han et al. 2016)
    DENSITY = "density"  # evenly over the CDF: centroids crowd where weights are dense
    KMEANS_PP = "kmeans++"  # scikit-learn's k-means++ seeding (random, seeded)


Seeder = Callable[[np.ndarray, int], np.ndarray]
SEEDS: Registry[Seeder] = Registry("cluster initialisation")


@SEEDS.register(Init.LINEAR.value)
def linear_init(values: np.ndarray, k: int) -> np.ndarray:
    """``k`` centres evenly spaced between the smallest and the largest value.

    Example:
        >>> linear_init(np.array([-1.0, 0.2, 3.0]), 3).tolist()
        [-1.0, 1.0, 3.0]
    """
    return np.linspace(float(values.min()), float(values.max()), k)


@SEEDS.register(Init.DENSITY.value)
def density_init(values: np.ndarray, k: int) -> np.ndarray:
    """``k`` centres at evenly spaced quantiles (the midpoints of ``k`` equal-mass bins).

    Example:
        >>> density_init(np.arange(8.0), 4).tolist()
        [0.875, 2.625, 4.375, 6.125]
    """
    return np.quantile(values, (np.arange(k) + 0.5) / k)


def kmeans_1d(values: np.ndarray, k: int, init: Init | str = Init.LINEAR, *, seed: int = 0,
              max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``values`` (any shape, flattened) into ``k`` centroids.

    Returns ``(centroids, labels)``: float32 centroids (k,) and each value's cluster (int64).

    Example:
        >>> c, labels = kmeans_1d(np.array([0.0, 0.1, 5.0, 5.2]), 2)
        >>> [round(float(v), 2) for v in c], labels.tolist()
        ([0.05, 5.1], [0, 0, 1, 1])
    """
    from sklearn.cluster import KMeans

    x = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    init = Init(init)
    start: str | np.ndarray = "k-means++" if init == Init.KMEANS_PP else \
        SEEDS.get(init.value)(x.ravel(), k).reshape(-1, 1)
    with warnings.catch_warnings():  # fewer distinct values than k: some clusters stay empty
        warnings.simplefilter("ignore")
        fitted = KMeans(n_clusters=k, init=start, n_init=1, max_iter=max_iter,
                        random_state=seed).fit(x)
    return fitted.cluster_centers_.ravel().astype(np.float32), fitted.labels_.astype(np.int64)
