import torch

from slimkit import load_model
from slimkit.analyse.stats import model_stats
from slimkit.export.onnx import export_onnx
from slimkit.model import Model, TensorSpec


def _model(module, shape):
    return Model(name="m", source="test", module=module.eval(),
                 inputs=(TensorSpec("input", ("batch", *shape)),))


def test_linear_and_conv_macs_closed_form(tmp_path):
    lin = _model(torch.nn.Linear(10, 5), (10,))
    stats = model_stats(lin)
    assert stats.macs == 50 and stats.parameters == 55
    conv = _model(torch.nn.Conv2d(3, 4, 3, padding=1), (3, 8, 8))
    stats = model_stats(conv)
    assert stats.macs == 8 * 8 * 4 * 3 * 3 * 3  # out pixels x out ch x (in ch x kernel)
    onnx_stats = model_stats(export_onnx(conv, tmp_path / "c.onnx").model)
    assert onnx_stats.macs == stats.macs and onnx_stats.parameters == stats.parameters


def test_resnet18_reference_figures():
    stats = model_stats(load_model("builtin:resnet18"))
    assert stats.parameters == 11_689_512  # the published ResNet-18 count
    assert 1.81e9 < stats.macs < 1.83e9  # the published 1.8 GMACs at 224x224


def test_nonzero_size_and_compression():
    module = torch.nn.Linear(100, 100)
    with torch.no_grad():
        module.weight[:, :90] = 0
    stats = model_stats(_model(module, (100,)))
    assert stats.nonzero_parameters == 100 * 10 + 100
    assert stats.size_bytes > 40_000 and stats.compressed_bytes < stats.size_bytes / 3
    assert 0.89 < stats.to_dict()["sparsity"] < 0.9


def test_minilm_macs_match_between_torch_and_onnx(minilm, tmp_path):
    torch_stats = model_stats(minilm, sequence=128)
    onnx_stats = model_stats(export_onnx(minilm, tmp_path / "m.onnx").model, sequence=128)
    assert abs(torch_stats.macs - onnx_stats.macs) / torch_stats.macs < 0.001  # pooler aside
    assert 1.40e9 < onnx_stats.macs < 1.45e9


def test_shape_inference_leaves_no_files_in_the_working_directory(tmp_path, monkeypatch):
    from onnx import TensorProto, helper

    from slimkit.analyse.stats import _infer_shapes

    monkeypatch.chdir(tmp_path)
    # a contrib op ORT's symbolic inference cannot resolve: it then saves debug files to cwd
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                           [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    _infer_shapes(model)
    assert list(tmp_path.iterdir()) == []
