"""Decisions that depend on the CPU, tested by injecting measured ratios (never by depending on
the CPU the test runs on): activation signedness, the preflight's verdict on a CPU without
VNNI, and the accuracy-aware mode's revert costs."""

from __future__ import annotations

import importlib

import pytest

from slimkit.quantize import QuantizeConfig, quantize
from slimkit.quantize.config import ActivationType
from slimkit.quantize.layer_cost import by_benefit_per_cost, revert_costs
from slimkit.testing import tiny_model

preflight = importlib.import_module("slimkit.quantize.preflight")

ZEN1 = {"model": "AMD EPYC 7551 (Zen 1)", "arch": "x86_64", "cores": 2, "family": "23",
        "model_number": "1", "stepping": "2", "mhz": "2000", "simd": ["avx2", "fma", "f16c"]}
ZEN4 = {**ZEN1, "model": "AMD EPYC (Zen 4)", "family": "25", "model_number": "17",
        "simd": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]}


@pytest.fixture
def cpu(monkeypatch):
    def inject(info: dict, ratios: tuple[float, float]) -> None:
        monkeypatch.setattr(preflight, "cpu_info", lambda: info)
        monkeypatch.setattr(preflight, "gemm_ratios", lambda: ratios)
    return inject


def test_without_vnni_the_same_command_works_and_the_report_says_what_int8_gains(cpu,
                                                                                tmp_path):
    cpu(ZEN1, (1.01, 0.51))  # measured on the Zen 1 of RESULTS.md
    result = quantize(tiny_model("mlp"), tmp_path / "q.onnx", QuantizeConfig(), measure=False)
    pre = result.sections["preflight"]
    assert not pre["int8_dot_product"] and pre["activation_type"] == "u8"
    assert pre["gemm_ratio_u8s8"] == 1.01 and not pre["pays"]
    assert any("no VNNI" in reason for reason in pre["reasons"])
    assert result.sections["proof"]["ok"]  # still integer kernels, just not faster here


def test_with_vnni_ratios_the_preflight_expects_a_gain(cpu, tmp_path):
    cpu(ZEN4, (4.2, 0.27))
    result = quantize(tiny_model("mlp"), tmp_path / "q.onnx", QuantizeConfig(), measure=False)
    pre = result.sections["preflight"]
    assert pre["int8_dot_product"] and pre["expected_speedup"] > 1.0
    assert not any("no VNNI" in reason for reason in pre["reasons"])


def test_activation_signedness_follows_the_measured_ratios():
    auto = ActivationType.AUTO
    assert preflight.choose_activation_type(auto, ZEN4, (4.2, 0.27)) == "u8"
    assert preflight.choose_activation_type(auto, {**ZEN4, "arch": "aarch64"},
                                            (0.9, 1.8)) == "s8"
    assert preflight.choose_activation_type(auto, ZEN4, None) == "u8"  # by architecture
    assert preflight.choose_activation_type(ActivationType.S8, ZEN4, (4.2, 0.27)) == "s8"


def test_revert_order_weighs_each_layers_cost_on_this_cpu():
    recovered = {"ffn": 0.004, "out_proj": 0.002}
    macs = {"ffn": 4.0, "out_proj": 1.0}
    # int8 at fp32 speed (no VNNI, Zen 1): reverting is free, so recover the most first
    assert by_benefit_per_cost(recovered, revert_costs(macs, ratio=1.0)) == ["ffn", "out_proj"]
    # int8 at 4.2x fp32 (VNNI): the FFN costs 4x more time per unit recovered
    assert by_benefit_per_cost(recovered, revert_costs(macs, ratio=4.2)) == ["out_proj", "ffn"]


def test_accuracy_aware_report_records_cost_model_and_float_noise(cpu, tmp_path):
    from slimkit import load_data

    cpu(ZEN4, (4.2, 0.27))
    model = tiny_model("mlp")
    data = load_data("synthetic:32", model)
    result = quantize(model, tmp_path / "q.onnx", QuantizeConfig(max_drop=0.0),
                      eval_data=data, measure=False)
    aware = result.sections["accuracy_aware"]
    assert aware["float_noise"] >= 0.0
    if result.sections["metric"]["drop"] > 0:  # int8 lost something: layers were ranked
        assert aware["cost_model"]["int8_over_fp32_gemm"] == 4.2
