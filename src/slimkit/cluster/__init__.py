"""Weight sharing by k-means clustering (Deep Compression's second stage): per layer or per
output channel, linear/density/k-means++ seeds, sparsity kept, centroids fine-tuned."""

from slimkit.cluster.api import ClusterResult, cluster
from slimkit.cluster.config import ClusterConfig, Granularity
from slimkit.cluster.kmeans import Init, kmeans_1d

__all__ = ["ClusterConfig", "ClusterResult", "Granularity", "Init", "cluster", "kmeans_1d"]

