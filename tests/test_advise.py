import json

import pytest

from slimkit.advise import AdviseConfig, Measurements, advise, amdahl, ordering_agrees
from slimkit.advise_techniques import Int8, Trial, UnstructuredPruning
from slimkit.cli import main
from slimkit.errors import InputError
from slimkit.testing import tiny_model


def measurements(gemm_ratio: float, shares: dict[str, float], **kw) -> Measurements:
    base = dict(cpu="test", simd=["avx2"], int8_dot_product=False, gemm_ratio_u8s8=gemm_ratio,
                gemm_ratio_s8s8=gemm_ratio / 5, kernel_ms_per_run=1.0, latency_by_op=shares,
                macs_by_type={}, macs=1, parameters=1, size_bytes=1, depthwise_mac_share=0.0,
                transformer=False, threads=1)
    return Measurements(**{**base, **kw})


def predict(technique, m, tmp_path):
    model = tiny_model("mlp")
    return technique.predict(model, m, Trial(model, AdviseConfig(), tmp_path))


def test_amdahl_closed_forms():
    assert amdahl(0.0, 10.0) == 1.0
    assert amdahl(1.0, 2.0) == 2.0
    assert amdahl(0.5, 2.0) == pytest.approx(4 / 3)


def test_int8_prediction_follows_the_measured_gemm_ratio_not_folklore(tmp_path):
    shares = {"MatMul": 0.8, "Softmax": 0.2}
    zen1 = predict(Int8("dynamic"), measurements(1.0, shares), tmp_path)
    assert zen1.predicted_speedup == pytest.approx(1.0, abs=0.01) and not zen1.pays
    assert "not faster than float here" in zen1.why
    zen3 = predict(Int8("dynamic"), measurements(1.8, shares), tmp_path)
    assert zen3.predicted_speedup == pytest.approx(amdahl(0.8, 1.8), abs=1e-3) and zen3.pays


def test_int8_advice_knows_the_modes(tmp_path):
    cnn = measurements(1.8, {"Conv": 0.7, "Gemm": 0.1, "Relu": 0.2}, depthwise_mac_share=0.3)
    dynamic = predict(Int8("dynamic"), cnn, tmp_path)
    static = predict(Int8("static"), cnn, tmp_path)
    assert static.predicted_speedup > dynamic.predicted_speedup
    assert "stay float in dynamic mode" in dynamic.why and "depthwise" in static.why
    encoder = measurements(1.8, {"MatMul": 0.7, "Softmax": 0.3}, transformer=True)
    assert predict(Int8("static"), encoder, tmp_path).trial.startswith("not tried")


def test_unstructured_predicts_no_speed(tmp_path):
    rec = predict(UnstructuredPruning(), measurements(1.0, {"MatMul": 1.0}), tmp_path)
    assert rec.predicted_speedup == 1.0 and not rec.pays and "no speed-up" in rec.why


def test_ordering_ignores_predicted_ties_and_catches_inversions():
    assert ordering_agrees([(2.5, 2.0), (1.0, 1.04), (1.0, 0.98)])
    assert not ordering_agrees([(2.5, 0.9), (1.0, 1.0)])


def test_config_is_validated():
    with pytest.raises(InputError, match="ratio"):
        AdviseConfig(ratio=1.0)


def test_advise_measures_and_ranks(one_torch_thread, monkeypatch):
    import importlib

    advise_module = importlib.import_module("slimkit.advise")

    # the ranking depends on this CPU's int8/fp32 GEMM ratio: inject a no-VNNI CPU's (Zen 1)
    monkeypatch.setattr(advise_module, "gemm_ratio_median", lambda runs=3: (1.01, 0.51))
    advice = advise(tiny_model("mlp"))
    names = [r.technique for r in advice.recommendations]
    assert set(names) == {"int8 dynamic", "int8 static", "structured pruning 50%",
                          "unstructured pruning 50%"}
    assert names[0] == "structured pruning 50%"  # half the MACs; int8 cannot beat that here
    m = advice.measurements
    assert m.gemm_ratio_u8s8 > 0 and abs(sum(m.latency_by_op.values()) - 1) < 1e-6
    assert advice.ordering_agrees is None and not advice.verified
    assert json.loads(json.dumps(advice.to_dict()))["kind"] == "advice"


def test_cli_advise_writes_json_for_the_report(tmp_path, capsys):
    out = tmp_path / "advice.json"
    spec = ["slimkit.testing:tiny_mlp", "--input-shape", "1x8"]
    assert main(["analyze", *spec, "--advise", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Recommendations" in printed and "integer GEMM measured" in printed
    assert json.loads(out.read_text())["recommendations"]
    assert main(["analyze", *spec, "--verify"]) == 2


def verified(spec):
    from slimkit import load_model

    advice = advise(load_model(spec), verify=True)
    measured = [r for r in advice.recommendations if r.measured_speedup is not None]
    assert len(measured) >= 3, [r.to_dict() for r in advice.recommendations]
    assert advice.ordering_agrees, [r.to_dict() for r in advice.recommendations]
    return advice


@pytest.mark.slow
def test_verified_advice_on_minilm_orders_techniques_as_measured():
    advice = verified("builtin:minilm")
    assert advice.measurements.transformer


@pytest.mark.slow
def test_verified_advice_on_mobilenetv2_orders_techniques_as_measured():
    advice = verified("builtin:mobilenetv2")
    assert advice.measurements.depthwise_mac_share > 0.05
