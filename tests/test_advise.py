import json

import pytest

from slimkit.advise import AdviseConfig, Measurements, advise
from slimkit.advise.config import amdahl, ordering_agrees
from slimkit.advise.techniques import Int8, Trial, UnstructuredPruning
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


def test_advise_measures_and_ranks(one_torch_thread, cpu_class):
    advice = advise(tiny_model("mlp"))
    recs = {r.technique.split(":")[0]: r for r in advice.recommendations}
    assert set(recs) == {"int8 dynamic", "int8 static", "structured pruning 50%",
                         "unstructured pruning 50%", "runtime choice"}
    runtime = recs["runtime choice"]  # measured, or "only onnxruntime can run here"
    assert runtime.predicted_speedup is None or runtime.measured_speedup == \
        runtime.predicted_speedup >= 1.0
    predicted = [r.predicted_speedup for r in advice.recommendations
                 if r.predicted_speedup is not None]
    assert predicted == sorted(predicted, reverse=True)  # best predicted first
    m = advice.measurements
    assert (m.gemm_ratio_u8s8, m.int8_dot_product) == (cpu_class.gemm_u8s8,
                                                       "avx512_vnni" in cpu_class.simd)
    assert abs(sum(m.latency_by_op.values()) - 1) < 1e-6
    # int8 follows the injected GEMM ratio; pruning's prediction does not depend on it
    int8 = recs["int8 dynamic"]
    assert int8.pays == (int8.predicted_speedup >= 1.10)
    assert (int8.predicted_speedup > 1.0) == (cpu_class.gemm_u8s8 > 1.0)
    assert recs["structured pruning 50%"].predicted_speedup > 1.0
    assert advice.ordering_agrees is None and not advice.verified
    assert json.loads(json.dumps(advice.to_dict()))["kind"] == "advice"


def test_cli_advise_writes_json_for_the_report(tmp_path, capsys, cpu_class):
    out = tmp_path / "advice.json"
    spec = ["slimkit.testing:tiny_mlp", "--input-shape", "1x8"]
    assert main(["analyze", *spec, "--advise", "-o", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "Recommendations" in printed
    assert f"integer GEMM measured {cpu_class.gemm_u8s8:.2f}x fp32" in printed
    advice = json.loads(out.read_text())
    assert advice["recommendations"]
    assert advice["measurements"]["cpu"] == cpu_class.model
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
