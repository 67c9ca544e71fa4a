"""Structured pruning: dependency graph, plans, physical removal, save/load, export."""

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from slimkit import load_data, load_model
from slimkit.errors import InputError, ModelLoadError
from slimkit.export.onnx import export_onnx
from slimkit.model import Model, Task, TensorSpec
from slimkit.prune import (
    PruneConfig,
    PrunePlan,
    apply_plan,
    load_pruned,
    plan_pruning,
    prune,
)
from slimkit.prune.decide import decide_global, kept_count
from slimkit.prune.structured import structured_model
from slimkit.testing import assert_close_to_reference
from slimkit.testing.pruning import zero_removed
from slimkit.zoo.architectures import DigitsCNN

SMALL_INPUT = {"resnet18": (1, 3, 64, 64), "mobilenetv2": (1, 3, 64, 64)}  # fast to trace


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def builtin(name: str) -> Model:
    if name == "digits-cnn":  # its architecture, untrained: training it takes a minute
        torch.manual_seed(0)
        return Model(name=name, source="slimkit.zoo.architectures:DigitsCNN",
                     module=DigitsCNN().eval(), task=Task.CLASSIFICATION,
                     inputs=(TensorSpec("input", ("batch", 1, 8, 8)),))
    model = load_model(f"builtin:{name}")
    return model.with_input_shape(SMALL_INPUT[name]) if name in SMALL_INPUT else model


@pytest.fixture
def digits_cnn() -> Model:
    return builtin("digits-cnn")


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def run(model: Model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.require_module("test").eval()(x)


def sample(model: Model, batch: int = 2) -> torch.Tensor:
    return torch.randn((batch, *model.inputs[0].shape[1:]), generator=torch.Generator()
                       .manual_seed(0))


class Branchy(nn.Module):
    """Residual add, depthwise conv with a channel multiplier, concatenation, squeeze-and-
    excitation (a multiplication) and flatten into Linear, on 3x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.a, self.bn_a = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 32, 3, padding=1, groups=16)
        self.b, self.c = nn.Conv2d(32, 8, 1), nn.Conv2d(32, 8, 1)
        self.se1, self.se2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.head = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = x + F.relu(self.bn_a(self.a(x)))
        d = F.relu6(self.dw(x))
        y = torch.cat([self.b(d), self.c(d)], dim=1)
        s = torch.sigmoid(self.se2(F.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        y = F.max_pool2d(y * s, 2)
        return self.head(torch.flatten(y, 1))


def branchy() -> Model:
    torch.manual_seed(0)
    module = Branchy().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for bn in (module.bn, module.bn_a):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return Model(name="branchy", source="test", module=module,
                 inputs=(TensorSpec("input", ("batch", 3, 8, 8)),), task=Task.CLASSIFICATION)


# ---- config and decisions --------------------------------------------------------------

@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1, float("nan"), True, "0.5"])
def test_ratio_outside_range_is_an_input_error(ratio):
    with pytest.raises(InputError, match="ratio"):
        PruneConfig(ratio=ratio)
    with pytest.raises(InputError, match="ratio"):
        PruneConfig(layer_ratios=(("re:conv", ratio),))


@pytest.mark.parametrize("fields, message", [
    ({"round_to": 0}, "round_to"), ({"importance": "l3"}, "unknown importance criterion"),
    ({"scope": "everywhere"}, "scope"), ({"exclude": ("re:(",)}, "not a valid regex"),
    ({"scope": "global", "layer_ratios": (("re:a", 0.1),)}, "layer_ratios"),
])
def test_bad_config_fields_are_input_errors(fields, message):
    with pytest.raises(InputError, match=message):
        PruneConfig(**fields)


def test_config_round_trips_through_json():
    config = PruneConfig(ratio=0.3, scope="layer", exclude=("type:Linear",),
                         layer_ratios=(("re:layer4", 0.7),))
    assert PruneConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(InputError, match="unknown pruning config fields"):
        PruneConfig.from_dict({"ratio": 0.5, "speed": 2})


@pytest.mark.parametrize("channels, target, multiple, kept", [
    (64, 32.0, 8, 32), (64, 35.9, 8, 32), (64, 36.0, 8, 40), (96, 48.0, 8, 48),
    (24, 12.0, 8, 16), (64, 0.6, 8, 8), (64, 0.4, 1, 1), (64, 64.0, 8, 64), (5, 1.0, 8, 5),
    (10, 5.0, 1, 5),
])
def test_kept_count_rounds_to_the_nearest_multiple_and_never_empties(channels, target,
                                                                     multiple, kept):
    assert kept_count(channels, target, multiple)[0] == kept


def test_global_decision_removes_the_requested_share_overall():
    scores = [torch.arange(1.0, 17.0), torch.ones(16), torch.tensor([0.01] * 8 + [5.0] * 8)]
    decisions = decide_global(scores, 0.25, 1)
    removed = sum(len(s) - len(d.keep) for s, d in zip(scores, decisions, strict=True))
    assert removed == 12
    assert decisions[1].keep == tuple(range(16))  # a flat group has nothing below its mean
    assert decisions[2].keep == tuple(range(8, 16))


# ---- physical removal on the built-in CNNs ---------------------------------------------

@pytest.mark.parametrize("name, low, high", [
    ("digits-cnn", 0.23, 0.28), ("resnet18-cifar", 0.23, 0.28), ("resnet18", 0.23, 0.29),
    ("mobilenetv2", 0.28, 0.40),  # narrow groups (16, 24 channels) round up to 8, 16
])
def test_half_of_the_channels_removed_keeps_shapes_and_quarter_of_parameters(name, low, high):
    model = builtin(name)
    plan = plan_pruning(model, PruneConfig(ratio=0.5))
    pruned = structured_model(model, plan)
    x = sample(model)
    assert run(pruned, x).shape == run(model, x).shape
    assert low < n_params(pruned.module) / n_params(model.module) < high
    assert any(g.kept < g.channels for g in plan.groups)
    output_layer = [g for g in plan.groups if g.note and "model output" in g.note]
    assert len(output_layer) == 1 and output_layer[0].kept == output_layer[0].channels


@pytest.mark.parametrize("name", ["digits-cnn", "mobilenetv2", "branchy"])
def test_removing_zeroed_channels_is_exact(name):
    model = branchy() if name == "branchy" else builtin(name)
    plan = plan_pruning(model, PruneConfig(ratio=0.5, importance="random", round_to=4))
    zeroed = Model(name=model.name, source=model.source, inputs=model.inputs,
                   module=zero_removed(copy.deepcopy(model.module), plan))
    # l1 ranks exactly the zeroed channels lowest, so it makes the same plan
    again = plan_pruning(zeroed, PruneConfig(ratio=0.5, importance="l1", round_to=4))
    assert again.layers == plan.layers
    x = sample(model)
    assert_close_to_reference(run(structured_model(zeroed, plan), x).numpy(),
                              run(zeroed, x).numpy(), atol=1e-5, rtol=1e-5)


def test_branchy_graph_couples_residual_depthwise_cat_and_excitation():
    plan = plan_pruning(branchy(), PruneConfig(ratio=0.5, round_to=1))
    groups = {g.layers[0]: g for g in plan.groups}
    assert set(groups["stem"].layers) == {"stem", "bn", "a", "bn_a", "dw", "b", "c"}
    assert set(groups["b"].layers) >= {"b", "c", "se1", "se2", "head"}  # cat + SE multiply
    assert groups["b"].channels == 16 and groups["b"].kept == 8
    edits = {e.name: e for e in plan.layers}
    assert edits["dw"].out_keep is not None and len(edits["dw"].out_keep) == 16  # 2 per input
    assert len(edits["head"].in_keep or ()) == 8 * 16  # a block of 4x4 features per channel
    assert plan.skipped == ()


@settings(max_examples=10, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ratio=st.floats(0.0, 0.95), round_to=st.sampled_from([1, 2, 4, 8]),
       seed=st.integers(0, 10_000), scope=st.sampled_from(["layer", "global"]))
def test_any_removal_keeps_every_shape_consistent(ratio, round_to, seed, scope):
    model = branchy()
    config = PruneConfig(ratio=ratio, round_to=round_to, seed=seed, scope=scope,
                         importance="random")
    plan = plan_pruning(model, config)
    pruned = structured_model(model, plan)
    assert run(pruned, sample(model, 3)).shape == (3, 5)
    for group in plan.groups:
        assert min(round_to, group.channels) <= group.kept <= group.channels
    for edit in plan.layers:  # no layer loses every channel
        assert all(keep is None or len(keep) >= 1 for keep in (edit.out_keep, edit.in_keep))


def test_a_concatenation_never_loses_all_channels_of_one_input():
    plan = plan_pruning(branchy(), PruneConfig(ratio=0.9375, round_to=1, importance="random"))
    edits = {e.name: e for e in plan.layers}
    assert len(edits["b"].out_keep or (0,)) >= 1 and len(edits["c"].out_keep or (0,)) >= 1
    assert any("no layer is emptied" in (g.note or "") for g in plan.groups)


def test_a_group_is_never_emptied_and_the_plan_says_so():
    plan = plan_pruning(builtin("digits-cnn"), PruneConfig(ratio=0.99))
    pruned = [g for g in plan.groups if g.kept < g.channels]
    assert pruned and all(g.kept == 8 for g in pruned)
    assert all("never emptied" in (g.note or "") for g in pruned)


def test_layers_fx_does_not_know_are_pruned_through_the_traced_graph():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.norm = nn.Conv2d(3, 16, 3), nn.GroupNorm(4, 16)
            self.conv2, self.transposed = nn.Conv2d(16, 16, 3), nn.ConvTranspose2d(16, 16, 1)
            self.conv3, self.fc = nn.Conv2d(16, 16, 1), nn.Linear(16, 2)

        def forward(self, x):
            x = self.conv2(self.norm(self.conv1(x)))
            x = self.conv3(torch.roll(self.transposed(x), 1, dims=2))
            return self.fc(x.mean((2, 3)))

    model = Model(name="odd", source="test", module=Odd(),
                  inputs=(TensorSpec("input", ("batch", 3, 12, 12)),))
    result = prune(model, PruneConfig(ratio=0.5))
    assert result.sections["skipped"] == [] and result.plan.extra["planner"].startswith("axis")
    kept = {g.layers[0]: (g.channels, g.kept) for g in result.plan.groups}
    # GroupNorm: the same 4 positions in each of its 4 groups, too few to round to 8
    assert kept["conv1"] == (4, 4)
    assert kept["conv2"] == kept["transposed"] == kept["conv3"] == (16, 8)
    x = torch.randn(2, 3, 12, 12)
    assert run(result.model, x).shape == (2, 2)


def test_unknown_ops_leave_their_group_whole_and_are_named():
    class Shuffled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 16, 3), nn.Conv2d(4, 8, 3)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            x = self.conv2(torch.pixel_shuffle(self.conv1(x), 2))
            return self.fc(x.mean((2, 3)))

    model = Model(name="shuffled", source="test", module=Shuffled(),
                  inputs=(TensorSpec("input", ("batch", 3, 12, 12)),))
    result = prune(model, PruneConfig(ratio=0.5, round_to=4))
    skipped = {row["layer"]: row["why"] for row in result.sections["skipped"]}
    assert "pixel_shuffle" in skipped["the model's forward"]
    kept = {g.layers[0]: (g.channels, g.kept, g.note) for g in result.plan.groups}
    assert kept["conv1"][:2] == (16, 16) and "pixel_shuffle" in kept["conv1"][2]
    assert kept["conv2"][:2] == (8, 4)
    assert run(result.model, torch.randn(2, 3, 12, 12)).shape == (2, 2)


def test_excluded_layers_keep_their_shapes_and_rules_must_match():
    model = builtin("digits-cnn")
    plan = plan_pruning(model, PruneConfig(ratio=0.5, exclude=("name:features.3",)))
    assert "features.3" not in {e.name for e in plan.layers}
    whole = [g for g in plan.groups if "excluded by rule 'name:features.3'" in (g.note or "")]
    assert {g.layers[0] for g in whole} == {"features.0", "features.3"}
    with pytest.raises(InputError, match="matches no layer"):
        plan_pruning(model, PruneConfig(exclude=("name:no.such.layer",)))


def test_layer_ratios_override_the_ratio_of_matching_groups():
    plan = plan_pruning(builtin("digits-cnn"),
                        PruneConfig(ratio=0.5, layer_ratios=(("name:features.7", 0.75),)))
    kept = {g.layers[0]: g.kept for g in plan.groups}
    assert kept["features.0"] == 16 and kept["features.7"] == 32


def test_untraceable_model_is_a_clear_error():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    model = Model(name="dd", source="test", module=DataDependent(),
                  inputs=(TensorSpec("input", ("batch", 3, 4, 4)),))
    with pytest.raises(InputError, match="cannot be traced with torch.fx"):
        plan_pruning(model)


# ---- plan, replay, save -------------------------------------------------------------------

def test_plan_replays_on_a_fresh_model_to_identical_weights():
    model = builtin("mobilenetv2")
    plan = plan_pruning(model, PruneConfig(ratio=0.5))
    pruned = structured_model(model, plan)
    fresh = load_model("builtin:mobilenetv2").module
    replayed = apply_plan(fresh, PrunePlan.from_json(plan.to_json()))
    want, got = pruned.module.state_dict(), replayed.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    with pytest.raises(InputError, match="already pruned"):
        apply_plan(replayed, plan)


def test_prune_leaves_the_input_model_unchanged_and_reports(digits_cnn):
    module = digits_cnn.module
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    try:
        result = prune(digits_cnn, PruneConfig(ratio=0.5))
        assert module.training and all(m.training for m in module.modules())
    finally:
        module.eval()
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.model.module is not module
    size = result.sections["size"]
    assert size["macs_after"] < 0.3 * size["macs_before"]
    assert size["parameters_after"] < 0.3 * size["parameters_before"]
    assert result.sections["seed"] == 0 and result.sections["groups"]
    json.dumps(result.to_dict(), allow_nan=False)


def test_save_and_load_round_trip(tmp_path, digits_cnn):
    result = prune(digits_cnn, PruneConfig(ratio=0.5, importance="l2"))
    folder = result.save(tmp_path / "pruned")
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "prune-plan.json"]
    loaded = load_pruned(folder, digits_cnn)
    x = sample(digits_cnn, 4)
    assert_close_to_reference(run(loaded, x).numpy(), run(result.model, x).numpy(),
                              atol=0.0, rtol=0.0)
    again = load_pruned(folder / "prune-plan.json")  # base rebuilt from the plan's source
    assert again.module.features[0].out_channels == 16
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b" ")
    with pytest.raises(ModelLoadError, match="checksum"):
        load_pruned(folder, digits_cnn)


def test_taylor_importance_reads_labels_or_predictions_without_touching_the_model(digits_cnn):
    data = load_data("builtin:digits:train", digits_cnn).take(64)
    labelled = plan_pruning(digits_cnn, PruneConfig(importance="taylor", batch_size=32), data)
    unlabelled = plan_pruning(digits_cnn, PruneConfig(importance="taylor"),
                              type(data)(data.inputs))
    assert labelled.extra["importance_loss"] == "cross-entropy with the data's labels"
    assert unlabelled.extra["importance_loss"] == "cross-entropy with the model's own predictions"
    assert labelled.layers != plan_pruning(digits_cnn, PruneConfig(importance="l1")).layers
    assert all(p.grad is None for p in digits_cnn.module.parameters())
    with pytest.raises(InputError, match="needs data"):
        plan_pruning(digits_cnn, PruneConfig(importance="taylor"))


def test_pruned_resnet18_cifar_exports_and_verifies_in_onnx_runtime(tmp_path):
    model = builtin("resnet18-cifar")
    pruned = structured_model(model, plan_pruning(model, PruneConfig(ratio=0.5)))
    result = export_onnx(pruned, tmp_path / "pruned.onnx")
    assert result.max_abs_diff < 1e-4 and result.path.is_file()
