"""Runtimes: options, providers, graph optimisation levels, torch.compile, the CUDA path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimkit.errors import DataError, InputError, RuntimeUnavailableError
from slimkit.export.sessions import open_session_for
from slimkit.runtime import RuntimeOptions, create_session, open_session, runtime_names
from slimkit.testing import tiny_model

X = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
NO_CUDA = not torch.cuda.is_available()


def reference(model=None) -> np.ndarray:
    model = model or tiny_model()
    with torch.inference_mode():
        return model.module(torch.from_numpy(X)).numpy()


def test_registry_names_every_runtime():
    assert {"torch", "torch-compile", "onnxruntime", "openvino"} <= set(runtime_names())
    with pytest.raises(InputError, match="known: onnxruntime, openvino, torch, torch-compile"):
        create_session(tiny_model(), "tvm")


def test_options_round_trip_and_validation():
    options = RuntimeOptions(threads=2, inter_op_threads=2, execution_mode="parallel",
                             graph_optimization="basic", optimized_model_path="o.onnx")
    again = RuntimeOptions.from_dict(options.to_dict())
    assert again == options and options.to_dict()["execution_mode"] == "parallel"
    with pytest.raises(InputError, match="fp16 needs a GPU provider"):
        RuntimeOptions(precision="fp16")
    with pytest.raises(InputError, match="graph_optimization 'max' is not one of"):
        RuntimeOptions(graph_optimization="max")
    with pytest.raises(InputError, match="threads must be"):
        RuntimeOptions(threads=0)
    with pytest.raises(InputError, match=r"unknown runtime option\(s\) \['thread'\]"):
        RuntimeOptions.from_dict({"thread": 1})


def test_unavailable_provider_lists_the_available_ones():
    from slimkit.runtime.onnxrt import available_providers

    if "tensorrt" in available_providers():
        pytest.skip("TensorRT is available here")
    with pytest.raises(RuntimeUnavailableError, match=r"'tensorrt' is not available.*cpu"):
        create_session(tiny_model(), "onnxruntime", RuntimeOptions(provider="tensorrt"))
    with pytest.raises(RuntimeUnavailableError, match="known providers"):
        create_session(tiny_model(), "onnxruntime", RuntimeOptions(provider="npu"))


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_ort_levels_and_modes_give_the_same_outputs(level, tmp_path):
    saved = tmp_path / f"{level}.onnx"
    options = RuntimeOptions(graph_optimization=level, optimized_model_path=saved,
                             execution_mode="parallel", inter_op_threads=2)
    with open_session_for(tiny_model(), "onnxruntime", options) as session:
        out = session.run({"input": X})[0]
    np.testing.assert_allclose(out, reference(), atol=1e-5, rtol=1e-5)
    assert saved.stat().st_size > 0  # the optimised graph is deployable as it is
    from slimkit import load_model

    with open_session(load_model(str(saved)), "onnxruntime") as session:
        np.testing.assert_allclose(session.run({"input": X})[0], out, atol=1e-6, rtol=1e-6)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
def test_cuda_unavailable_on_torch_is_a_clear_error():
    with pytest.raises(RuntimeUnavailableError, match="'cuda' is not available to torch here; "
                                                      "available: cpu"):
        create_session(tiny_model(), "torch", RuntimeOptions(provider="cuda"))


def test_torch_compile_failure_is_a_clear_error(monkeypatch):
    def broken(module, **kwargs):
        def run(*args):
            raise RuntimeError("inductor: C++ compile failed")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    session = create_session(tiny_model(), "torch-compile")
    with pytest.raises(RuntimeUnavailableError, match="could not compile model 'tiny-mlp'.*"
                                                      "C\\+\\+ compile failed"):
        session.run({"input": X})
    with pytest.raises(DataError, match="do not fit"):  # bad inputs stay a DataError
        session.run({"input": X[:, :5]})


def test_torch_compile_bookkeeping_without_inductor(monkeypatch):
    real = torch.compile
    monkeypatch.setattr(torch, "compile",
                        lambda module, **kw: real(module, backend="eager", dynamic=False))
    session = create_session(tiny_model(), "torch-compile")
    np.testing.assert_allclose(session.run({"input": X})[0], reference(), atol=1e-6)
    session.run({"input": X})
    session.run({"input": X[:1]})
    assert len(session.compile_seconds) == 2  # one compile per shape set


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager(one_torch_thread):
    model = tiny_model("cnn")
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with open_session(model, "torch-compile") as session, session.pinned():
        out = session.run({"input": x})[0]
        assert session.total_compile_seconds > 0
    with torch.inference_mode():
        expected = model.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("runtime", ["torch", "torch-compile"])
@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_torch_cuda(runtime, precision, atol):
    model = tiny_model()
    options = RuntimeOptions(provider="cuda", precision=precision)
    with open_session(model, runtime, options) as session:
        out = session.run({"input": X})[0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference(), atol=atol, rtol=atol)
    assert next(model.module.parameters()).device.type == "cpu"  # the user's module stays put


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_ort_cuda(precision, atol):
    from slimkit.runtime.onnxrt import available_providers

    if "cuda" not in available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    options = RuntimeOptions(provider="cuda", precision=precision)
    with open_session_for(tiny_model(), "onnxruntime", options) as session:
        out = session.run({"input": X})[0]
        assert session.session.get_providers()[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(out, reference(), atol=atol, rtol=atol)


def test_a_runtime_of_onnx_files_refuses_a_torch_model_and_export_opens_it(tmp_path):
    with pytest.raises(InputError, match="runs ONNX files.*export it first"):
        create_session(tiny_model(), "onnxruntime")
    with open_session_for(tiny_model(), "onnxruntime") as session:
        folder = session.path.parent
        np.testing.assert_allclose(session.run({"input": X})[0], reference(), atol=1e-5)
    assert not folder.exists()  # the temporary export goes with the session
