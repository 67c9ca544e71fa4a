import numpy as np
import pytest
import torch

from slimkit import load_data
from slimkit.errors import InputError, VerificationError
from slimkit.export.onnx import ExportConfig, export_onnx
from slimkit.model import Model, TensorSpec
from slimkit.runtime import open_session
from slimkit.testing import assert_close_to_reference, tiny_model


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_export_is_verified_with_dynamic_batch(tmp_path, kind):
    model = tiny_model(kind)
    result = export_onnx(model, tmp_path / "m.onnx")
    assert result.max_abs_diff < 1e-5
    x = np.random.default_rng(0).standard_normal((7, *model.inputs[0].shape[1:])).astype("f4")
    with open_session(result.model, "onnxruntime") as s, open_session(model, "torch") as t:
        assert_close_to_reference(s.run({"input": x})[0], t.run({"input": x})[0],
                                  atol=1e-5, rtol=1e-4)


class SignDependent(torch.nn.Module):
    """Tracing keeps one branch, so the export differs from torch for other inputs."""

    def forward(self, x):
        return x * 2 if x.sum() > 0 else -x


def test_mismatch_is_an_error_and_writes_nothing(tmp_path):
    model = Model(name="branchy", source="test", module=SignDependent(),
                  inputs=(TensorSpec("input", ("batch", 4)),))
    negative = load_data("synthetic:4", model)
    negative = type(negative)({"input": -np.abs(negative.inputs["input"])})
    with pytest.raises(VerificationError, match="does not match torch"):
        export_onnx(model, tmp_path / "b.onnx", sample=negative)
    assert list(tmp_path.iterdir()) == []


def test_minilm_export_matches_torch(minilm, tmp_path):
    sentences = ["slimkit makes models smaller", "a second, longer sentence for padding",
                 "short"]
    (tmp_path / "s.txt").write_text("\n".join(sentences))
    data = load_data(str(tmp_path / "s.txt"), minilm)
    result = export_onnx(minilm, tmp_path / "m.onnx", sample=data)
    assert result.max_abs_diff < 1e-4


def test_export_rejects_onnx_input_and_bad_config(tmp_path):
    onnx_model = export_onnx(tiny_model(), tmp_path / "m.onnx").model
    with pytest.raises(InputError, match="needs a PyTorch model"):
        export_onnx(onnx_model, tmp_path / "again.onnx")
    with pytest.raises(InputError, match="opset"):
        ExportConfig(opset=5)
    with pytest.raises(InputError, match="must end with .onnx"):
        export_onnx(tiny_model(), tmp_path / "m.bin")
