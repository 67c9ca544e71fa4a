"""Weight sharing by k-means: seeds, codebooks, kept zeros, centroid fine-tuning, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slimkit
from slimkit.cluster import ClusterConfig, cluster, kmeans_1d
from slimkit.cluster.kmeans import density_init, linear_init
from slimkit.cluster.sharing import SharedCentroids
from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.graph.masks import finalize
from slimkit.prune import PruneConfig, prune
from slimkit.testing import tiny_model


def _labelled(n: int = 32, features: int = 8, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    return Dataset({"input": x}, labels=(x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0))


def _sparse_mlp(ratio: float = 0.5):
    return finalize(prune(tiny_model("mlp"), PruneConfig(mode="unstructured",
                                                         ratio=ratio)).model)


def test_seeds_closed_form() -> None:
    values = np.array([-2.0, 0.0, 1.0, 6.0])
    assert linear_init(values, 3).tolist() == [-2.0, 2.0, 6.0]
    assert density_init(np.arange(4.0), 2).tolist() == [0.75, 2.25]


@pytest.mark.parametrize("init", ["linear", "density", "kmeans++"])
def test_kmeans_finds_separated_groups(init: str) -> None:
    values = np.concatenate([np.full(10, -1.0), np.full(10, 0.5), np.full(10, 3.0)])
    centroids, labels = kmeans_1d(values, 3, init, seed=0)
    assert sorted(np.round(centroids, 4).tolist()) == [-1.0, 0.5, 3.0]
    assert len(set(labels[:10])) == 1 and len(set(labels)) == 3


def test_layer_codebooks_hold_at_most_k_values_and_input_is_unchanged() -> None:
    model = tiny_model("mlp")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    result = cluster(model, ClusterConfig(clusters=4))
    for name, sub in (("fc1", result.model.module.fc1), ("fc2", result.model.module.fc2)):
        assert torch.unique(sub.weight).numel() <= 4, name
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())
    rows = result.sections["layers"]
    assert [r["bits"] for r in rows] == [2, 2] and all(r["unique_values"] == 4 for r in rows)
    assert sorted(n for n, _ in result.model.module.fc1.named_parameters()) == ["bias", "weight"]


def test_channel_granularity_has_one_codebook_per_row() -> None:
    result = cluster(tiny_model("mlp"), ClusterConfig(clusters=2, granularity="channel"))
    weight = result.model.module.fc1.weight
    assert all(torch.unique(row).numel() <= 2 for row in weight)
    assert torch.unique(weight).numel() > 2  # rows differ


def test_sparsity_is_preserved_and_zero_is_not_a_centroid() -> None:
    sparse = _sparse_mlp(0.5)
    zeros = sparse.module.fc1.weight == 0
    result = cluster(sparse, ClusterConfig(clusters=4, preserve_sparsity=True))
    weight = result.model.module.fc1.weight
    assert torch.equal(weight == 0, zeros)  # same zeros, and no other weight became zero
    assert torch.unique(weight[weight != 0]).numel() == 4


def test_centroid_fine_tuning_keeps_assignments_and_unique_values() -> None:
    sparse = _sparse_mlp(0.5)
    config = ClusterConfig(clusters=4, epochs=0)
    plain = cluster(sparse, config).model.module.fc1.weight
    tuned_result = cluster(sparse, ClusterConfig(clusters=4, epochs=3, lr=1e-2),
                           _labelled())
    tuned = tuned_result.model.module.fc1.weight
    assert not torch.equal(plain, tuned)  # centroids moved
    assert torch.unique(tuned[tuned != 0]).numel() == 4
    assert torch.equal(tuned == 0, plain == 0)
    # same assignments: weights sharing a centroid before still share one after
    pairs = {(float(a), float(b)) for a, b in zip(plain.flatten(), tuned.flatten(), strict=True)}
    assert len(pairs) == 5  # 4 centroids + the kept zero
    assert len(tuned_result.sections["fine_tune"]["losses"]) == 3


def test_gradients_of_shared_weights_are_summed() -> None:
    p = SharedCentroids(torch.tensor([[1.0, 2.0]]), torch.tensor([[1, 1, 2], [0, 2, 1]]))
    weight = p(torch.zeros(2, 3))
    (weight * torch.arange(1.0, 7.0).reshape(2, 3)).sum().backward()
    # centroid 1 at positions 0, 1, 5 (grads 1, 2, 6); centroid 2 at 2, 4 (grads 3, 5)
    assert p.centroids.grad is not None
    assert p.centroids.grad.tolist() == [[9.0, 8.0]]


def test_more_clusters_than_weights_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="fc2.*fewer than the 128 clusters"):
        cluster(tiny_model("mlp"), ClusterConfig(clusters=128))
    # fc2 keeps 32 non-zero weights of 64 after pruning half
    with pytest.raises(InputError, match="non-zero weights"):
        cluster(_sparse_mlp(0.5), ClusterConfig(clusters=64))


@pytest.mark.parametrize("fields", [{"clusters": 1}, {"clusters": 257}, {"clusters": 2.5},
                                    {"init": "random"}, {"epochs": -1}, {"lr": 0.0},
                                    {"exclude": ("re:(",)}])
def test_bad_config_is_rejected(fields: dict) -> None:
    with pytest.raises(InputError):
        ClusterConfig(**fields)


def test_config_round_trips_and_epochs_need_data() -> None:
    config = ClusterConfig(clusters=16, init="kmeans++", granularity="channel")
    assert ClusterConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="unknown"):
        ClusterConfig.from_dict({"clusterz": 4})
    with pytest.raises(InputError, match="labelled data"):
        cluster(tiny_model("mlp"), ClusterConfig(clusters=4, epochs=1))


def test_exclusion_and_public_verb() -> None:
    result = slimkit.cluster(tiny_model("mlp"), slimkit.ClusterConfig(clusters=4,
                                                                      exclude=("name:fc2",)))
    assert [r["layer"] for r in result.sections["layers"]] == ["fc1"]
    assert result.sections["skipped"] == [{"layer": "fc2", "why": "excluded by a rule"}]
    again = slimkit.cluster(tiny_model("mlp"), slimkit.ClusterConfig(clusters=4))
    assert len(again.sections["layers"]) == 2
