"""Adaptive batch normalisation: statistics re-estimated on training batches, the input model
untouched, a no-op without BatchNorm, and the ``batchnorm`` recipe stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimkit.data import Dataset, synthetic
from slimkit.errors import InputError
from slimkit.prune import PruneConfig, prune
from slimkit.testing import tiny_model
from slimkit.testing.cnns import cnn_model
from slimkit.train.batchnorm import BatchNormConfig, recalibrate_batchnorm


def _norms(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_statistics_are_the_average_over_the_batches_and_the_input_is_kept(one_torch_thread):
    net = cnn_model("resnet-basic")
    data = synthetic(net.inputs, 40, seed=1)
    before = {k: v.clone() for k, v in net.module.state_dict().items()}
    out = recalibrate_batchnorm(net, data, batches=2, batch_size=16, seed=0)
    for key, value in net.module.state_dict().items():
        assert torch.equal(value, before[key]), key  # the input model is not changed
    first = _norms(out.module)[0]
    assert first.momentum == _norms(net.module)[0].momentum and not out.module.training
    # the first BatchNorm follows the stem conv: its mean is the average of the two batches'
    order = np.random.default_rng(0).permutation(40)[:32]
    x = torch.from_numpy(data.inputs[net.inputs[0].name][order])
    conv = next(m for m in out.module.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        y = conv(x)
    means = torch.stack([y[:16].mean((0, 2, 3)), y[16:].mean((0, 2, 3))]).mean(0)
    torch.testing.assert_close(first.running_mean, means, atol=1e-5, rtol=1e-4)
    assert int(first.num_batches_tracked) == 2
    # weights are untouched: only statistics moved
    torch.testing.assert_close(out.module.state_dict()[next(iter(before))],
                               before[next(iter(before))], atol=0.0, rtol=0.0)


def test_recalibrated_statistics_normalise_the_pruned_network(one_torch_thread):
    """After pruning, every BatchNorm sees inputs with other statistics; recalibrated, each
    channel is normalised to mean ~0 and variance ~1 again on that data."""
    data = synthetic(cnn_model("resnet-basic").inputs, 64, seed=2)
    # statistics of this data first, as a trained network's would be
    net = recalibrate_batchnorm(cnn_model("resnet-basic"), data, batches=4, batch_size=16)
    pruned = prune(net, PruneConfig(ratio=0.5, importance="l2")).model
    fixed = recalibrate_batchnorm(pruned, data, batches=4, batch_size=16)

    def worst_mean(model):
        seen = []
        hooks = [m.register_forward_hook(
            lambda m, i, o: seen.append(((i[0] - m.running_mean[None, :, None, None])
                                         / (m.running_var[None, :, None, None] + m.eps).sqrt())
                                        .mean((0, 2, 3)).abs().max().item()))
            for m in _norms(model.module)]
        with torch.no_grad():
            model.module(torch.from_numpy(data.inputs[net.inputs[0].name]))
        for h in hooks:
            h.remove()
        return max(seen)

    assert worst_mean(fixed) < 0.05
    assert worst_mean(pruned) > worst_mean(fixed)


def test_no_batchnorm_or_no_batches_is_a_no_op():
    mlp = tiny_model("mlp")
    data = synthetic(mlp.inputs, 8)
    assert recalibrate_batchnorm(mlp, data) is mlp
    net = cnn_model("resnet-basic")
    assert recalibrate_batchnorm(net, synthetic(net.inputs, 8), batches=0) is net
    assert recalibrate_batchnorm(net, synthetic(net.inputs, 1)) is net


def test_recipe_stage(tmp_path, one_torch_thread):
    from slimkit.recipe import Recipe, compress

    with pytest.raises(InputError, match="batches >= 1"):
        BatchNormConfig(batches=0)
    net = cnn_model("resnet-basic")
    data = synthetic(net.inputs, 16, seed=0)
    recipe = Recipe.from_dict({"stages": [{"prune": {"ratio": 0.25}},
                                          {"batchnorm": {"batches": 1, "batch_size": 8}},
                                          "export"]})
    result = compress(net, recipe, tmp_path / "out", data, Dataset(data.inputs), measure=False)
    assert result.model.onnx_path.is_file()
    assert [s.name for s in recipe.stages][1] == "batchnorm"
