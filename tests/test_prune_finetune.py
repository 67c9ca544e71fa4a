"""Fine-tuning, iterative prune -> fine-tune, regularised and gradient-saliency importance,
the sensitivity scan and the prune command's new flags, on tiny models."""

import copy
import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from slimkit.cli import main
from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.evaluate.torch_metric import metric
from slimkit.graph.plan import LayerEdit, PrunePlan, compose_plans
from slimkit.prune import PruneConfig, apply_plan, load_pruned, prune
from slimkit.prune.importance import IMPORTANCE, ImportanceContext
from slimkit.prune.iterative import prune_and_finetune
from slimkit.prune.regularise import slimming_penalty
from slimkit.prune.sensitivity import config_from_scan, sensitivity_scan
from slimkit.testing import assert_close_to_reference, tiny_model
from slimkit.testing.cnns import INPUT_SHAPE, cnn_model
from slimkit.train.finetune import finetune
from slimkit.train.hooks import FinetuneConfig, TrainHooks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def labelled(shape, count=64, classes=4, seed=0) -> Dataset:
    """Inputs whose label is the argmax of a fixed projection of their channel means:
    learnable by any of the tiny models."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, *shape)).astype(np.float32)
    means = x.reshape(count, shape[0], -1).mean(-1) if len(shape) > 1 else x
    projection = np.random.default_rng(99).standard_normal((means.shape[1], classes))
    return Dataset({"input": x}, (means @ projection).argmax(1).astype(np.int64))


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_finetune_lowers_the_loss_is_seeded_and_leaves_the_model_alone():
    model, data = tiny_model("mlp"), labelled((8,))
    before = state(model.module)
    config = FinetuneConfig(epochs=3, lr=0.05, batch_size=16)
    first, second = finetune(model, data, config), finetune(model, data, config)
    assert first.losses[-1] < first.losses[0]
    assert first.losses == second.losses
    assert all(torch.equal(v, model.module.state_dict()[k]) for k, v in before.items())
    sgd = finetune(model, data, FinetuneConfig(epochs=1, optimizer="sgd", max_batches=1))
    assert len(sgd.losses) == 1


@pytest.mark.parametrize("fields", [{"epochs": -1}, {"iterations": 0}, {"lr": 0.0},
                                    {"optimizer": "lbfgs"}, {"max_batches": 0}])
def test_bad_finetune_settings_are_input_errors(fields):
    with pytest.raises((InputError, ValueError)):
        FinetuneConfig(**fields)


def test_finetune_needs_labels_or_a_loss_and_a_teacher_needs_a_loss():
    model = tiny_model("mlp")
    unlabelled = Dataset({"input": np.ones((4, 8), np.float32)})
    with pytest.raises(InputError, match="labelled data"):
        finetune(model, unlabelled)
    with pytest.raises(InputError, match="teacher needs a loss_fn"):
        finetune(model, labelled((8,)), hooks=TrainHooks(teacher=model))


def test_the_loss_hook_sees_the_teacher_outputs():
    model, data = tiny_model("mlp"), labelled((8,), count=16)
    seen = []

    def distill(outputs, batch):
        seen.append(batch.teacher_outputs.shape)
        return F.mse_loss(outputs, batch.teacher_outputs)

    teacher = copy.deepcopy(model)
    result = finetune(model, data, FinetuneConfig(epochs=1, batch_size=8),
                      TrainHooks(loss_fn=distill, teacher=teacher))
    assert seen == [torch.Size([8, 4])] * 2
    assert result.losses[0] < 1e-10  # the student starts equal to its teacher


def test_iterative_structured_pruning_composes_one_plan_that_replays(tmp_path):
    model, data = cnn_model("resnet-basic"), labelled(INPUT_SHAPE, count=32, classes=10)
    result = prune_and_finetune(model, PruneConfig(ratio=0.5, round_to=2), data,
                                FinetuneConfig(epochs=1, iterations=3, batch_size=16),
                                eval_data=data)
    steps = result.sections["finetune"]["steps"]
    assert [s["ratio"] for s in steps] == pytest.approx([0.3519, 0.4815, 0.5], abs=1e-4)
    assert all({"metric_pruned", "metric_finetuned", "losses"} <= set(s) for s in steps)
    replayed = apply_plan(copy.deepcopy(model.module), PrunePlan.from_json(result.plan.to_json()))
    shapes = {k: v.shape for k, v in result.model.module.state_dict().items()}
    assert {k: v.shape for k, v in replayed.state_dict().items()} == shapes
    loaded = load_pruned(result.save(tmp_path / "out"), cnn_model("resnet-basic"))
    x = torch.from_numpy(data.inputs["input"][:4])
    with torch.no_grad():
        assert_close_to_reference(loaded.module(x).numpy(), result.model.module.eval()(x).numpy(),
                                  atol=1e-6, rtol=1e-6)
    assert result.sections["size"]["macs_ratio"] < 0.4


def test_unstructured_masks_survive_iterative_fine_tuning():
    model, data = tiny_model("cnn"), labelled((3, 8, 8), count=32)
    result = prune(model, PruneConfig(mode="unstructured", ratio=0.6), data,
                   finetune=FinetuneConfig(epochs=2, iterations=2, lr=0.05, batch_size=8))
    weight = result.model.module.conv.weight
    assert float((weight == 0).float().mean()) == pytest.approx(0.6, abs=0.01)
    assert hasattr(result.model.module.conv, "weight_mask")


def test_compose_plans_maps_kept_channels_back_to_the_original():
    first = PrunePlan("structured", {"name": "m"}, {}, (
        LayerEdit("a", "Conv2d", 8, 3, (0, 2, 4, 6)), LayerEdit("b", "Conv2d", 4, 8, None,
                                                                 (0, 2, 4, 6))))
    second = PrunePlan("structured", {"name": "m-pruned"}, {}, (
        LayerEdit("a", "Conv2d", 4, 3, (1, 3)), LayerEdit("b", "Conv2d", 4, 4, (0,), (1, 3))))
    layers = {e.name: e for e in compose_plans(first, second).layers}
    assert layers["a"].out_keep == (2, 6) and layers["a"].out_channels == 8
    assert layers["b"].in_keep == (2, 6) and layers["b"].out_keep == (0,)


def test_slimming_drives_norm_scales_down_and_prunes_the_trained_model():
    model, data = tiny_model("cnn"), labelled((3, 8, 8), count=32)
    penalty = slimming_penalty(0.5)
    expected = 0.5 * float(model.module.bn.weight.detach().abs().sum())
    assert float(penalty(model.module).detach()) == pytest.approx(expected)
    config = PruneConfig(ratio=0.5, round_to=1, importance="slimming", penalty=0.05,
                         sparse_epochs=3, sparse_lr=0.01, batch_size=8)
    result = prune(model, config, data)
    info = result.sections["sparse_training"]
    assert info["criterion"] == "slimming" and len(info["losses"]) == 3
    assert result.model.module.conv.out_channels == 4
    with pytest.raises(InputError, match="needs labelled data"):
        prune(model, config, Dataset({"input": data.inputs["input"]}))


def test_group_lasso_scores_the_sparse_trained_channel_norms():
    model, data = tiny_model("cnn"), labelled((3, 8, 8), count=16)
    ctx = ImportanceContext(model, ("conv.weight", "bn.weight"), data, batch_size=8)
    scores = IMPORTANCE.get("group_lasso")(ctx)
    assert scores["conv.weight"].shape == model.module.conv.weight.shape
    assert not torch.equal(scores["conv.weight"], model.module.conv.weight.detach() ** 2)


def test_gradient_saliency_is_half_w_squared_times_summed_squared_gradients():
    model, data = tiny_model("mlp"), labelled((8,), count=8)
    ctx = ImportanceContext(model, ("fc1.weight",), data, batches=1, batch_size=8)
    module = copy.deepcopy(model.module)
    x, y = torch.from_numpy(data.inputs["input"]), torch.from_numpy(data.labels)
    F.cross_entropy(module(x), y).backward()
    expected = 0.5 * module.fc1.weight.detach() ** 2 * module.fc1.weight.grad ** 2
    assert torch.allclose(IMPORTANCE.get("saliency")(ctx)["fc1.weight"], expected, atol=1e-9)
    with pytest.raises(InputError, match="needs data"):
        IMPORTANCE.get("saliency")(ImportanceContext(model, ("fc1.weight",)))


def test_sensitivity_scan_prunes_each_group_alone_and_sets_ratios():
    model, data = cnn_model("resnet-basic"), labelled(INPUT_SHAPE, count=16, classes=10)
    scan = sensitivity_scan(model, data, PruneConfig(round_to=2), ratios=(0.5, 0.75))
    groups = {row["group"] for row in scan.rows}
    assert len(scan.rows) == 2 * len(groups) and scan.metric == "accuracy"
    assert all(row["drop"] == pytest.approx(scan.baseline - row["metric"]) for row in scan.rows)
    config = config_from_scan(PruneConfig(ratio=0.5, round_to=2), scan)
    assert config.layer_ratios and all(r in (0.0, 0.5, 0.75) for _, r in config.layer_ratios)
    pruned = prune(model, config)
    assert pruned.sections["size"]["macs_ratio"] < 1.0
    unlabelled = Dataset({"input": data.inputs["input"]})
    assert sensitivity_scan(model, unlabelled, ratios=(0.5,)).baseline == 1.0


def test_prune_command_fine_tunes_and_scans(capsys, tmp_path):
    data = labelled((8,), count=32)
    np.savez(tmp_path / "d.npz", input=data.inputs["input"], labels=data.labels)
    out = tmp_path / "pruned"
    code = main(["prune", "slimkit.testing:tiny_mlp", "--input-shape", "1x8", "-o", str(out),
                 "--round-to", "2", "--importance", "saliency", "--data",
                 str(tmp_path / "d.npz"), "--finetune-epochs", "1", "--iterations", "2",
                 "--sensitivity", "--sensitivity-ratios", "0.5", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code in (0, None) and (out / "prune-plan.json").is_file()
    assert len(report["finetune"]["steps"]) == 2 and report["sensitivity"]["rows"]
    assert main(["prune", "slimkit.testing:tiny_mlp", "--input-shape", "1x8", "-o",
                 str(tmp_path / "x"), "--finetune-epochs", "1"]) == 2
    assert "need --data" in capsys.readouterr().err


def test_metric_without_labels_compares_with_the_reference():
    model = tiny_model("mlp")
    data = Dataset({"input": np.random.default_rng(0).standard_normal((8, 8)).astype(
        np.float32)})
    assert metric(model, data, reference=model) == 1.0
    with pytest.raises(InputError, match="reference"):
        metric(model, data)


@pytest.mark.slow
def test_digits_cnn_half_the_channels_plus_fine_tuning_stays_within_half_a_point(digits_cnn):
    from slimkit import load_data

    train = load_data("builtin:digits:train", digits_cnn)
    test = load_data("builtin:digits:test", digits_cnn)
    original = metric(digits_cnn, test)
    result = prune_and_finetune(digits_cnn, PruneConfig(ratio=0.5), train,
                                FinetuneConfig(epochs=3, lr=1e-3), eval_data=test)
    assert result.sections["size"]["macs_ratio"] < 0.3
    assert original - metric(result.model, test) <= 0.005
