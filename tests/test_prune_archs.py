"""Every tiny architecture of slimkit.testing.cnns prunes at 50%, runs, keeps its output shape,
exports to ONNX (verified in ONNX Runtime), and removing zeroed channels is exact."""

import copy

import pytest
import torch

from slimkit.export.onnx import export_onnx
from slimkit.model import Model
from slimkit.prune import PruneConfig, load_pruned, plan_pruning, prune
from slimkit.prune.structured import structured_model
from slimkit.testing import assert_close_to_reference
from slimkit.testing.cnns import CNN_NAMES, INPUT_SHAPE, cnn_model
from slimkit.testing.pruning import zero_removed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# MACs left after removing half of the channels (about a quarter where every group prunes);
# resnext's grouped convolutions have 4 channels per group: rounding to 4 keeps them whole
MAX_MACS_RATIO = {"resnext": 0.45}


def run(model: Model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.require_module("test").eval()(x)


def sample(batch: int = 2) -> torch.Tensor:
    return torch.randn((batch, *INPUT_SHAPE), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", CNN_NAMES)
def test_half_the_channels_removed_runs_exports_and_verifies(name, tmp_path):
    model = cnn_model(name)
    result = prune(model, PruneConfig(ratio=0.5, round_to=4))
    x = sample()
    assert run(result.model, x).shape == run(model, x).shape
    size = result.sections["size"]
    assert size["macs_ratio"] <= MAX_MACS_RATIO.get(name, 0.35), size
    assert size["parameters_after"] < size["parameters_before"]
    exported = export_onnx(result.model, tmp_path / "pruned.onnx")
    assert exported.max_abs_diff < 1e-4
    loaded = load_pruned(result.save(tmp_path / "saved"), cnn_model(name, seed=1))
    assert_close_to_reference(run(loaded, x).numpy(), run(result.model, x).numpy(),
                              atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", CNN_NAMES)
def test_removing_zeroed_channels_is_exact(name):
    model = cnn_model(name)
    plan = plan_pruning(model, PruneConfig(ratio=0.5, importance="random", round_to=4))
    assert plan.layers, "nothing was pruned"
    zeroed = Model(name=model.name, source=model.source, inputs=model.inputs, task=model.task,
                   module=zero_removed(copy.deepcopy(model.module), plan))
    x = sample()
    assert_close_to_reference(run(structured_model(zeroed, plan), x).numpy(),
                              run(zeroed, x).numpy(), atol=1e-5, rtol=1e-5)


def test_grouped_convolutions_lose_the_same_positions_in_every_group():
    model = cnn_model("resnext")
    result = prune(model, PruneConfig(ratio=0.5, round_to=1))
    grouped = result.model.module.blocks[0].body[1][0]
    assert (grouped.in_channels, grouped.out_channels, grouped.groups) == (8, 8, 4)
    edits = {e.name: e for e in result.plan.layers}
    kept = edits["blocks.0.body.1.0"].in_keep
    local = [{i % 4 for i in kept if i // 4 == g} for g in range(4)]
    assert all(positions == local[0] and len(positions) == 2 for positions in local)
    assert result.sections["size"]["macs_ratio"] < 0.3
    assert not result.sections["skipped"][:-1]  # only the output group is left whole
