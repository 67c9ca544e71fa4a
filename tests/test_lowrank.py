"""Low-rank factorisation: exact at full rank, energy/ratio/fixed ranks, MAC-based skipping,
bad ranks, replayable plan + safetensors, ONNX export verified."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimkit import load_model
from slimkit.errors import InputError, ModelLoadError
from slimkit.lowrank import LowRankConfig, energy_rank, load_lowrank, low_rank
from slimkit.lowrank.factorize import build, spectrum
from slimkit.model import DYNAMIC_BATCH, Model, TensorSpec
from slimkit.testing import assert_close_to_reference, tiny_model


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(self.dw(x).mean(dim=(2, 3)))


def conv_net() -> ConvNet:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return ConvNet().eval()


def conv_model() -> Model:
    return Model(name="convnet", source="tests.test_lowrank:conv_net", module=conv_net(),
                 inputs=(TensorSpec("input", (DYNAMIC_BATCH, 3, 12, 12)),))


@pytest.mark.parametrize("kind, layer, ranks", [
    ("linear", nn.Linear(7, 5), (5,)),
    ("linear", nn.Linear(5, 9), (5,)),
    ("conv-channel", nn.Conv2d(6, 5, 3, padding=1, padding_mode="reflect"), (5,)),
    ("conv-channel", nn.Conv2d(6, 10, 1, stride=2), (6,)),
    ("conv-tucker2", nn.Conv2d(6, 10, 3, stride=2, padding=1, dilation=1), (10, 6)),
])
def test_full_rank_is_exact(kind, layer, ranks):
    torch.manual_seed(0)
    x = torch.randn(2, 7) if kind == "linear" and layer.in_features == 7 else (
        torch.randn(2, 5) if kind == "linear" else torch.randn(2, 6, 9, 9))
    new, energy = build(kind, layer, ranks)
    assert energy == pytest.approx(1.0, abs=1e-9)
    with torch.no_grad():
        assert_close_to_reference(new(x).numpy(), layer(x).numpy(), atol=1e-5, rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12), st.integers(1, 12))
def test_truncation_error_is_the_dropped_energy(rows, cols, rank):
    """Eckart-Young: the rank-r error of a matrix is its dropped singular values."""
    rank = min(rank, rows, cols)
    torch.manual_seed(rows * 100 + cols)
    layer = nn.Linear(cols, rows, bias=False)
    new, energy = build("linear", layer, (rank,))
    approx = new[1].weight.detach().double() @ new[0].weight.detach().double()
    w = layer.weight.detach().double()
    dropped = float(((w - approx) ** 2).sum() / (w**2).sum())
    assert dropped == pytest.approx(1.0 - energy, abs=1e-5)
    s = torch.linalg.svdvals(w)
    assert torch.allclose(spectrum(w).values, s, atol=1e-6)


def test_energy_rank_closed_form():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert energy_rank(s, 16 / 22) == 1
    assert energy_rank(s, 0.8) == 2
    assert energy_rank(s, 1.0) == 4


def test_ratio_rule_reports_and_lowers_macs(one_torch_thread):
    r = low_rank(conv_model(), LowRankConfig(rule="ratio", ratio=0.25, verify=False,
                                             layer_ranks=(("name:conv1", 12),)))
    names = {row["name"]: row for row in r.sections["layers"]}
    assert names["conv2"]["ranks"] == [8]  # 0.25 of min(32, 16*9)
    assert names["conv2"]["macs_after"] < names["conv2"]["macs_before"]
    skipped = {row["layer"]: row["why"] for row in r.sections["skipped"]}
    assert "grouped" in skipped["dw"]
    assert "not below" in skipped["conv1"]  # rank 12 * (27 + 16) > 16 * 27 MACs
    size = r.sections["size"]
    assert size["macs_after"] < size["macs_before"]
    assert size["parameters_after"] < size["parameters_before"]
    assert isinstance(r.model.module.conv2, nn.Sequential)
    assert isinstance(conv_model().module.conv2, nn.Conv2d)  # the input is untouched


def test_tucker2_and_onnx_export_verified(one_torch_thread):
    model = conv_model()
    r = low_rank(model, LowRankConfig(rule="ratio", ratio=0.5, conv_method="tucker2",
                                      layers=("name:conv2",)))
    assert r.sections["layers"][0]["kind"] == "conv-tucker2"
    assert r.sections["layers"][0]["ranks"] == [16, 8]
    assert r.sections["onnx_verified"]["max_abs_diff"] < 1e-4
    assert r.sections["fidelity"]["sqnr_db"] > 0.0  # random weights: a flat spectrum


def test_rank_too_large_is_an_error():
    with pytest.raises(InputError, match=r"'fc1'.*allows rank at most 8.*rank 9"):
        low_rank(tiny_model("mlp"), LowRankConfig(rule="rank", rank=9, verify=False))


def test_fixed_rank_that_saves_nothing_is_skipped():
    r = low_rank(tiny_model("mlp"), LowRankConfig(rule="rank", rank=6, exclude=("name:fc2",),
                                                  verify=False))
    assert r.sections["layers"] == []  # 6 * (8 + 16) >= 8 * 16 MACs
    why = {row["layer"]: row["why"] for row in r.sections["skipped"]}
    assert "not below" in why["fc1"] and "excluded" in why["fc2"]


def test_layer_ranks_and_unmatched_rule():
    cfg = LowRankConfig(rule="ratio", ratio=1.0, layer_ranks=(("name:fc1", 2),), verify=False)
    r = low_rank(tiny_model("mlp"), cfg)
    assert [(x["name"], x["ranks"]) for x in r.sections["layers"]] == [("fc1", [2])]
    with pytest.raises(InputError, match="match no factorised layer"):
        low_rank(tiny_model("mlp"), LowRankConfig(layer_ranks=(("re:^nothing", 2),),
                                                  verify=False))


@pytest.mark.parametrize("bad", [{"energy": 0.0}, {"ratio": 1.5}, {"rule": "rank"},
                                 {"rule": "rank", "rank": 0}, {"rule": "svd"},
                                 {"conv_method": "cp"}, {"min_saving": 1.0}])
def test_bad_config(bad):
    with pytest.raises(InputError):
        LowRankConfig(**bad)


def test_config_round_trip():
    cfg = LowRankConfig(rule="rank", rank=3, layer_ranks=(("re:fc", 2),), exclude=("name:x",))
    assert LowRankConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_save_and_load_back(tmp_path, one_torch_thread):
    model = load_model("slimkit.testing:tiny_mlp")
    r = low_rank(model, LowRankConfig(rule="rank", rank=2, verify=False))
    folder = r.save(tmp_path / "lr")
    loaded = load_model(str(folder))
    x = torch.randn(4, 8)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.module(x).numpy(), r.model.module(x).numpy())
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelLoadError, match="checksum"):
        load_lowrank(folder)



def test_cli_lowrank(tmp_path, capsys):
    from slimkit.cli import main

    out = tmp_path / "lr"
    code = main(["--quiet", "lowrank", "slimkit.testing:tiny_mlp", "-o", str(out), "--rule",
                 "rank", "--rank", "2", "--exclude", "name:fc2", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layers"][0]["ranks"] == [2] and report["onnx_verified"]["max_abs_diff"] < 1e-4
    assert load_model(str(out)).module.fc1[1].in_features == 2
    assert main(["lowrank", "slimkit.testing:tiny_mlp", "-o", str(tmp_path / "x"), "--rule",
                 "rank", "--rank", "99"]) == 2
    assert "allows rank at most" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_rank_scan_picks_per_layer_ranks_that_keep_the_sqnr_floor():
    from slimkit.data import synthetic
    from slimkit.lowrank import LowRankConfig, low_rank, rank_scan
    from slimkit.testing import tiny_model

    model = tiny_model("mlp")
    data = synthetic(model.inputs, 32, seed=0)
    scan = rank_scan(model, data, ratios=(0.25, 0.5))
    assert {row["layer"] for row in scan.rows} == {"fc1", "fc2"}
    by = {(row["layer"], row["ratio"]): row["sqnr_db"] for row in scan.rows}
    assert by[("fc1", 0.5)] >= by[("fc1", 0.25)]  # a larger rank is never worse
    floor = min(by.values())
    config = scan.config_for(LowRankConfig(verify=False), floor)
    assert {rule for rule, _ in config.layer_ranks} == {"name:fc1", "name:fc2"}
    result = low_rank(model, config, data)
    assert result.sections["fidelity"]["sqnr_db"] > 0
    nothing = scan.config_for(LowRankConfig(verify=False), 1e9)  # no rank keeps that floor
    assert nothing.layer_ranks == ()


def test_cli_scan_sqnr_chooses_the_ranks(tmp_path):
    from slimkit.cli import main

    out = tmp_path / "lr"
    assert main(["--quiet", "lowrank", "slimkit.testing:tiny_mlp", "--input-shape", "1x8",
                 "-o", str(out), "--scan-sqnr", "0", "--no-verify", "--json"]) == 0
    assert (out / "lowrank-plan.json").exists()
