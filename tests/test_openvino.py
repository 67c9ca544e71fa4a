"""The OpenVINO runtime, IR export and int8 target (optional extra: skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit import load_data, load_model
from slimkit._deps import is_available
from slimkit.errors import InputError, MissingDependencyError
from slimkit.runtime import RuntimeOptions, create_session, open_session

needs_openvino = pytest.mark.skipif(
    not (is_available("openvino") and is_available("nncf")),
    reason="OpenVINO/NNCF not installed (pip install 'slimkit[openvino]')")


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory):
    from slimkit import export_onnx

    model = load_model("builtin:digits-cnn")
    return export_onnx(model, tmp_path_factory.mktemp("ov") / "digits.onnx").model


def test_missing_openvino_gives_one_line_with_the_install_command(monkeypatch, digits_onnx):
    import slimkit._deps as deps

    real = deps.is_available
    monkeypatch.setattr(deps, "is_available", lambda name: name != "openvino" and real(name))
    with pytest.raises(MissingDependencyError, match=r"pip install 'slimkit\[openvino\]'"):
        create_session(digits_onnx, "openvino")


def test_bf16_is_refused_on_runtimes_that_would_run_fp32(digits_onnx):
    with pytest.raises(InputError, match="bf16 runs on the openvino runtime"):
        create_session(digits_onnx, "onnxruntime", RuntimeOptions(precision="bf16"))


def test_precision_and_threads_are_always_explicit():
    from slimkit.runtime.openvino import compile_config

    cfg = compile_config(RuntimeOptions(threads=2))
    assert cfg["INFERENCE_PRECISION_HINT"] == "f32"  # OpenVINO's own default may be bf16
    assert cfg["INFERENCE_NUM_THREADS"] == "2" and cfg["PERFORMANCE_HINT"] == "LATENCY"
    assert compile_config(RuntimeOptions(precision="bf16"))["INFERENCE_PRECISION_HINT"] == \
        "bf16"


@needs_openvino
def test_openvino_runs_onnx_like_onnxruntime(digits_onnx):
    data = load_data("builtin:digits:test", digits_onnx).take(16)
    with open_session(digits_onnx, "onnxruntime") as ort_s, \
            open_session(digits_onnx, "openvino", RuntimeOptions(threads=1)) as ov_s:
        batch = data.first_batch(16)
        np.testing.assert_allclose(ov_s.run(batch)[0], ort_s.run(batch)[0], rtol=1e-3,
                                   atol=1e-4)


@needs_openvino
def test_ir_export_is_verified_and_runs(digits_onnx, tmp_path):
    from slimkit.export.openvino import export_openvino

    result = export_openvino(digits_onnx, tmp_path / "m.xml")
    assert result.path.exists() and result.path.with_suffix(".bin").exists()
    assert result.max_abs_diff < 1e-4
    with pytest.raises(InputError, match="must end with .xml"):
        export_openvino(digits_onnx, tmp_path / "m.onnx")


@needs_openvino
def test_int8_for_openvino_is_proven_from_the_runtime_model(tmp_path):
    from slimkit.quantize.openvino_target import quantize_openvino

    model = load_model("builtin:digits-cnn")
    calib = load_data("builtin:digits:train", model).take(32)
    report = quantize_openvino(model, tmp_path / "q.xml", calib=calib)
    assert report["proof"]["ok"] and report["proof"]["integer_layers"]
    assert report["fidelity"]["fp32"]["top1_agreement"] >= 0.9
    assert report["size"]["quantized_bytes"] < report["size"]["float_bytes"]
    assert report["precision"]["chosen"] in ("fp32", "bf16")
