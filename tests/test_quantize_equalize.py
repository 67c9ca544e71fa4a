"""Cross-layer equalization and bias correction: exact where claimed, and they recover a
depthwise CNN whose channel ranges per-tensor int8 cannot hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.data import load_data
from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec
from slimkit.quantize import QuantizeConfig, quantize
from slimkit.quantize.equalize import equalize, find_pairs, quantize_weight
from slimkit.testing import tiny_model


class DepthwiseNet(nn.Module):
    def __init__(self, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act1 = act()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.act2 = act()
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.dw(self.act1(self.bn(self.conv(x)))))
        return self.fc(torch.relu(self.pw(x)).mean(dim=(2, 3)))


def imbalanced(act: type[nn.Module] = nn.ReLU) -> Model:
    """Depthwise channels whose ranges span 10^-2..10^2, compensated in the next layer: the
    function is an ordinary one, but one per-tensor scale cannot serve every channel."""
    torch.manual_seed(0)
    net = DepthwiseNet(act).eval()
    factors = torch.tensor([100.0, 0.01, 10.0, 0.1, 1.0, 30.0, 0.03, 3.0])
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.dw.weight.mul_(factors.reshape(-1, 1, 1, 1))
        net.dw.bias.mul_(factors)
        net.pw.weight.div_(factors.reshape(1, -1, 1, 1))
    return Model(name="dw-net", source="test", module=net, task=Task.CLASSIFICATION,
                 inputs=(TensorSpec("input", (DYNAMIC_BATCH, 3, 8, 8)),))


def test_pairs_follow_relu_but_not_relu6():
    pairs, skipped = find_pairs(imbalanced().module)
    assert ("dw", "pw") in pairs
    pairs6, skipped6 = find_pairs(imbalanced(nn.ReLU6).module)
    assert pairs6 == [] and {tuple(s["pair"]) for s in skipped6} >= {("dw", "pw")}


def test_equalization_is_exact_and_evens_the_ranges():
    model = imbalanced()
    data = load_data("synthetic:16", model)
    eq, info = equalize(model, data, per_channel=False, bias_correction=False)
    assert ["dw", "pw"] in info["pairs"] and info["batchnorm_folded"] == ["conv"]
    x = model.torch_args(data.first_batch(8))
    with torch.no_grad():
        torch.testing.assert_close(eq.module(*x), model.module(*x), atol=1e-4, rtol=1e-3)
    ranges = eq.module.dw.weight.detach().abs().reshape(8, -1).amax(dim=1)
    before = model.module.dw.weight.detach().abs().reshape(8, -1).amax(dim=1)
    assert float(ranges.max() / ranges.min()) < float(before.max() / before.min()) / 100
    assert model.module.bn is not None and isinstance(model.module.bn, nn.BatchNorm2d)


def test_quantized_weight_is_within_half_a_step():
    w = torch.randn(4, 3, 3, 3)
    step = w.abs().reshape(4, -1).amax(dim=1) / 127
    err = (quantize_weight(w, True) - w).abs().reshape(4, -1).amax(dim=1)
    assert bool((err <= step / 2 + 1e-7).all())


def test_equalization_recovers_per_tensor_int8(tmp_path):
    model = imbalanced()
    calib = load_data("synthetic:32", model)
    data = load_data("synthetic:16", model)
    sqnr = {}
    for mode in ("off", "on"):
        config = QuantizeConfig(mode="static", per_channel=False, equalize=mode)
        result = quantize(model, tmp_path / f"{mode}.onnx", config, calib=calib,
                          eval_data=data, measure=False)
        sqnr[mode] = result.sections["metric"]["fidelity"]["sqnr_db"]
        assert result.sections["equalization"]["applied"] is (mode == "on")
    assert sqnr["on"] > sqnr["off"] + 10.0, sqnr


def test_auto_keeps_the_better_model_and_skips_plain_cnns(tmp_path):
    model = imbalanced()
    calib = load_data("synthetic:32", model)
    result = quantize(model, tmp_path / "a.onnx", QuantizeConfig(mode="static",
                      per_channel=False), calib=calib, measure=False)
    eq = result.sections["equalization"]
    assert eq["applied"] and eq["sqnr_with"] >= eq["sqnr_without"]
    tiny = tiny_model("cnn")
    plain = quantize(tiny, tmp_path / "t.onnx", QuantizeConfig(mode="static"),
                     calib=load_data("synthetic:16", tiny), measure=False)
    assert plain.sections["equalization"] == {
        "applied": False, "why": "no depthwise convolution pair to equalize"}


@pytest.mark.parametrize("value", ["sometimes", 3])
def test_bad_equalize_setting_is_an_input_error(value):
    from slimkit.errors import InputError

    with pytest.raises(InputError):
        QuantizeConfig(equalize=value)
