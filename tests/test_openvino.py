"""The OpenVINO runtime, IR export and int8 target (optional extra: skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit import load_data
from slimkit._deps import is_available
from slimkit.errors import InputError, MissingDependencyError
from slimkit.runtime import RuntimeOptions, create_session, open_session
from slimkit.testing import tiny_model

needs_openvino = pytest.mark.skipif(
    not (is_available("openvino") and is_available("nncf")),
    reason="OpenVINO/NNCF not installed (pip install 'slimkit[openvino]')")


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    from slimkit import export_onnx

    return export_onnx(tiny_model("cnn"), tmp_path_factory.mktemp("ov") / "cnn.onnx").model


def test_missing_openvino_gives_one_line_with_the_install_command(monkeypatch, cnn_onnx):
    import slimkit._deps as deps

    real = deps.is_available
    monkeypatch.setattr(deps, "is_available", lambda name: name != "openvino" and real(name))
    with pytest.raises(MissingDependencyError, match=r"pip install 'slimkit\[openvino\]'"):
        create_session(cnn_onnx, "openvino")


def test_bf16_is_refused_on_runtimes_that_would_run_fp32(cnn_onnx):
    with pytest.raises(InputError, match="bf16 runs on the openvino runtime"):
        create_session(cnn_onnx, "onnxruntime", RuntimeOptions(precision="bf16"))


def test_precision_and_threads_are_always_explicit():
    from slimkit.runtime.openvino import compile_config

    cfg = compile_config(RuntimeOptions(threads=2))
    assert cfg["INFERENCE_PRECISION_HINT"] == "f32"  # OpenVINO's own default may be bf16
    assert cfg["INFERENCE_NUM_THREADS"] == "2" and cfg["PERFORMANCE_HINT"] == "LATENCY"
    assert compile_config(RuntimeOptions(precision="bf16"))["INFERENCE_PRECISION_HINT"] == \
        "bf16"


@needs_openvino
def test_openvino_runs_onnx_like_onnxruntime(cnn_onnx):
    data = load_data("synthetic:16", cnn_onnx)
    with open_session(cnn_onnx, "onnxruntime") as ort_s, \
            open_session(cnn_onnx, "openvino", RuntimeOptions(threads=1)) as ov_s:
        batch = data.first_batch(16)
        np.testing.assert_allclose(ov_s.run(batch)[0], ort_s.run(batch)[0], rtol=1e-3,
                                   atol=1e-4)


@needs_openvino
def test_ir_export_is_verified_and_runs(cnn_onnx, tmp_path):
    from slimkit.export.openvino import export_openvino

    result = export_openvino(cnn_onnx, tmp_path / "m.xml")
    assert result.path.exists() and result.path.with_suffix(".bin").exists()
    assert result.max_abs_diff < 1e-4
    with pytest.raises(InputError, match="must end with .xml"):
        export_openvino(cnn_onnx, tmp_path / "m.onnx")


@needs_openvino
@pytest.mark.slow
def test_int8_for_openvino_is_proven_from_the_runtime_model(tmp_path):
    from slimkit.quantize.openvino_target import quantize_openvino

    model = tiny_model("cnn")
    calib = load_data("synthetic:32", model)
    report = quantize_openvino(model, tmp_path / "q.xml", calib=calib)
    assert report["proof"]["ok"] and report["proof"]["integer_layers"]
    assert report["fidelity"]["fp32"]["sqnr_db"] >= 20.0
    assert report["size"]["quantized_bytes"] < report["size"]["float_bytes"]
    assert report["precision"]["chosen"] in ("fp32", "bf16")


def test_runtime_pick_measures_and_lists_a_missing_openvino(monkeypatch, cnn_onnx):
    import slimkit._deps as deps
    from slimkit.bench.runtime_pick import pick_runtime

    real = deps.is_available
    monkeypatch.setattr(deps, "is_available", lambda name: name != "openvino" and real(name))
    pick = pick_runtime(cnn_onnx, ("onnxruntime", "openvino"), rounds=1)
    assert pick.runtime == "onnxruntime" and set(pick.p50_ms) == {"onnxruntime"}
    assert pick.skipped[0]["runtime"] == "openvino" and "slimkit[openvino]" in \
        pick.skipped[0]["why"]
