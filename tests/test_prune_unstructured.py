"""Unstructured pruning: masks, the cubic schedule, finalize, size report, save/load."""

import pytest
import torch

from slimkit import load_data
from slimkit.errors import InputError
from slimkit.graph.masks import finalize
from slimkit.model import Model, Task, TensorSpec
from slimkit.prune import PruneConfig, load_pruned, prune
from slimkit.testing import assert_close_to_reference
from slimkit.train.schedules import cubic_sparsity

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture
def digits_cnn() -> Model:
    from slimkit.zoo.architectures import DigitsCNN

    torch.manual_seed(0)
    return Model(name="digits-cnn", source="slimkit.zoo.architectures:DigitsCNN",
                 module=DigitsCNN().eval(), task=Task.CLASSIFICATION,
                 inputs=(TensorSpec("input", ("batch", 1, 8, 8)),))


def zeros(weight: torch.Tensor) -> float:
    return float((weight == 0).float().mean())


def test_per_layer_masks_hit_the_ratio_in_every_layer(digits_cnn):
    result = prune(digits_cnn, PruneConfig(mode="unstructured", ratio=0.7))
    rows = result.sections["sparsity"]["layers"]
    assert {row["layer"] for row in rows} == {"features.0", "features.3", "features.7",
                                              "classifier.1", "classifier.3"}
    assert all(abs(row["sparsity"] - 0.7) < 0.01 for row in rows)
    assert torch.all(digits_cnn.module.features[0].weight != 0)  # the input model is untouched


def test_global_masks_rank_all_layers_together(digits_cnn):
    result = prune(digits_cnn, PruneConfig(mode="unstructured", ratio=0.7, scope="global"))
    sparsity = result.sections["sparsity"]
    assert abs(sparsity["overall"] - 0.7) < 0.001
    assert len({row["sparsity"] for row in sparsity["layers"]}) > 1  # layers differ


def test_masks_survive_fine_tuning(digits_cnn):
    result = prune(digits_cnn, PruneConfig(mode="unstructured", ratio=0.5))
    module = result.model.module.train()
    mask = module.features[3].weight == 0
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        opt.step()
    module(x)  # the masked weight is recomputed at every forward
    assert torch.all(module.features[3].weight[mask] == 0)


def test_finalize_bakes_the_masks_without_changing_outputs(digits_cnn):
    result = prune(digits_cnn, PruneConfig(mode="unstructured", ratio=0.6, exclude=("re:^cla",)))
    baked = finalize(result.model)
    names = [name for name, _ in baked.module.named_parameters()]
    assert not any(name.endswith("_orig") for name in names)
    assert not any(name.endswith("_mask") for name, _ in baked.module.named_buffers())
    assert abs(zeros(baked.module.features[7].weight) - 0.6) < 0.01
    assert zeros(baked.module.classifier[1].weight) == 0.0  # excluded
    assert [row["layer"] for row in result.sections["skipped"]] == ["classifier.1",
                                                                    "classifier.3"]
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert_close_to_reference(baked.module(x).numpy(), result.model.module(x).numpy(),
                                  atol=0.0, rtol=0.0)


def test_report_says_no_speedup_and_measures_the_compressed_size(digits_cnn):
    result = prune(digits_cnn, PruneConfig(mode="unstructured", ratio=0.7))
    assert "no speed-up" in result.sections["speed"]
    size = result.sections["size"]
    assert size["compressed_bytes_after"] < 0.6 * size["compressed_bytes_before"]
    assert size["bitmask_bytes"] < 0.5 * size["safetensors_bytes"]


def test_taylor_masks_need_data_and_use_it(digits_cnn):
    data = load_data("builtin:digits:train", digits_cnn).take(64)
    config = PruneConfig(mode="unstructured", ratio=0.5, importance="taylor")
    result = prune(digits_cnn, config, data)
    assert abs(result.sections["sparsity"]["overall"] - 0.5) < 0.01
    with pytest.raises(InputError, match="needs data"):
        prune(digits_cnn, config)


def test_unstructured_save_and_load(tmp_path, digits_cnn):
    result = prune(digits_cnn, PruneConfig(mode="unstructured", ratio=0.5))
    loaded = load_pruned(result.save(tmp_path / "sparse"), digits_cnn)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert_close_to_reference(loaded.module(x).numpy(), result.model.module(x).numpy(),
                                  atol=0.0, rtol=0.0)
    assert abs(zeros(loaded.module.features[3].weight) - 0.5) < 0.01


@pytest.mark.parametrize("initial, final, begin, end, frequency", [
    (0.0, 0.8, 0, 100, 1), (0.1, 0.9, 20, 220, 1), (0.0, 0.5, 10, 50, 10),
])
def test_cubic_schedule_matches_the_closed_form(initial, final, begin, end, frequency):
    values = []
    for step in range(0, end + 30):
        t = min(max(step, begin), end)
        t = begin + (t - begin) // frequency * frequency if t < end else end
        want = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** 3
        got = cubic_sparsity(step, final, end, initial=initial, begin_step=begin,
                             frequency=frequency)
        assert got == pytest.approx(want, abs=1e-12)
        values.append(got)
    assert values == sorted(values)  # never decreases
    assert values[0] == initial and values[-1] == final


@pytest.mark.parametrize("kwargs", [{"final": 1.0, "end_step": 10},
                                    {"final": 0.5, "end_step": 0},
                                    {"final": 0.5, "end_step": 10, "frequency": 0}])
def test_cubic_schedule_rejects_bad_settings(kwargs):
    with pytest.raises(InputError):
        cubic_sparsity(5, **kwargs)
