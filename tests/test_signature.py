"""Input signatures (issue 15): --input strings, sample files and Hugging Face configs describe
a model's inputs once; bad input gets one clear line naming what the model wants."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from slimkit import load_model
from slimkit.cli import main
from slimkit.data import load_data
from slimkit.errors import DataError, InputError, ModelLoadError
from slimkit.load.signature import describe, parse_input
from slimkit.model import Task, TensorSpec

FACTORY = '''
import torch
from torch import nn


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.fc = nn.Embedding(40, 8), nn.Linear(8, 3)

    def forward(self, ids, mask):
        return self.fc((self.embed(ids) * mask.unsqueeze(-1).float()).mean(1))


def two():
    torch.manual_seed(0)
    return TwoInputs()
'''


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    path = tmp_path_factory.mktemp("factory") / "two.py"
    path.write_text(FACTORY)
    return f"{path}:two"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    pytest.importorskip("transformers")
    from slimkit.testing.corpus import hf_folder

    root = tmp_path_factory.mktemp("hf")
    return {name: hf_folder(name, root / name) for name in ("bert-seqcls", "vit-imgcls")}


@pytest.mark.parametrize("text, spec", [
    ("ids:1x16:int64", TensorSpec("ids", ("batch", 16), "int64")),
    ("x:1x3x32x32", TensorSpec("x", ("batch", 3, 32, 32))),
    ("tokens:1xseq:long:1000", TensorSpec("tokens", ("batch", "seq"), "int64", 1000)),
])
def test_input_strings_parse(text, spec):
    assert parse_input(text) == spec


@pytest.mark.parametrize("text, message", [
    ("ids", "does not parse"), ("ids:1x:int64", "is not of the form"),
    ("ids:1x16:int65", "unknown dtype 'int65'"), ("ids:1x0", "is not of the form"),
    ("x:1x3:float32:10", "bounds integer values"), ("1ids:1x3", "does not parse"),
])
def test_bad_input_strings_are_one_clear_line(text, message):
    with pytest.raises(InputError, match=message) as info:
        parse_input(text)
    assert "\n" not in str(info.value)


def test_a_factory_takes_any_signature_and_runs_it(factory):
    model = load_model(factory, inputs=["ids:1x16:int64", "mask:1x16:int64"])
    assert model.input_names == ("ids", "mask") and model.inputs[0].high == 40
    data = load_data("synthetic:4", model)  # data loaders fit the signature
    assert data.inputs["ids"].dtype == np.int64 and data.inputs["ids"].max() < 40
    with torch.no_grad():
        assert model.module(*model.torch_args(data.first_batch(4))).shape == (4, 3)


def test_a_factory_with_the_wrong_inputs_names_what_it_wants(factory):
    with pytest.raises(InputError, match=r"takes 2 inputs \(ids, mask\); --input gives 1"):
        load_model(factory, inputs=["ids:1x16:int64"])
    with pytest.raises(DataError, match=r"Embedding\), which expects integer ids \(int64\)"):
        load_model(factory, inputs=["ids:1x16:float32", "mask:1x16:int64"])
    with pytest.raises(ModelLoadError, match="--input NAME:SHAPE:DTYPE"):
        load_model(factory)


def test_a_sample_file_gives_the_signature(factory, tmp_path):
    path = tmp_path / "sample.npz"
    np.savez(path, ids=np.ones((2, 9), np.int64), mask=np.ones((2, 9), np.int64))
    model = load_model(factory, inputs=str(path))
    assert [(s.name, s.shape, s.dtype) for s in model.inputs] == [
        ("ids", ("batch", 9), "int64"), ("mask", ("batch", 9), "int64")]


def test_hugging_face_signatures_come_from_the_config(folders):
    text = load_model(str(folders["bert-seqcls"]))
    assert text.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert text.inputs[0].dtype == "int64" and text.inputs[0].high == 99
    vision = load_model(str(folders["vit-imgcls"]))
    assert vision.inputs == (TensorSpec("pixel_values", ("batch", 3, 32, 32)),)
    assert vision.task == Task.CLASSIFICATION and vision.output_names == ("logits",)


def test_a_signature_may_narrow_a_hugging_face_model(folders, tmp_path):
    model = load_model(str(folders["bert-seqcls"]), inputs=["input_ids:1x12:int64"])
    assert model.input_names == ("input_ids",) and model.inputs[0].shape == ("batch", 12)
    with torch.no_grad():
        assert model.module(torch.ones(2, 12, dtype=torch.long)).shape == (2, 3)


@pytest.mark.parametrize("inputs, error, message", [
    (["ids:1x16:int64"], InputError, r"names \['ids'\], which '.*' does not take; it takes "
                                     r"input_ids \(int64"),
    (["attention_mask:1x16:int64"], InputError, r"lacks \['input_ids'\]"),
    (["input_ids:1x16:float32"], DataError, "is int64; --input gives float32"),
])
def test_hugging_face_signatures_that_do_not_fit(folders, inputs, error, message):
    with pytest.raises(error, match=message):
        load_model(str(folders["bert-seqcls"]), inputs=inputs)


def test_a_sample_file_missing_an_input_or_of_another_dtype(folders, tmp_path):
    missing = tmp_path / "missing.npz"
    np.savez(missing, attention_mask=np.ones((2, 8), np.int64))
    with pytest.raises(InputError, match=r"sample file .* lacks \['input_ids'\]"):
        load_model(str(folders["bert-seqcls"]), inputs=str(missing))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixel_values=np.ones((1, 3, 32, 32), np.float64))
    with pytest.raises(DataError, match="is float32; sample file .* gives float64"):
        load_model(str(folders["vit-imgcls"]), inputs=str(wrong))
    with pytest.raises(InputError, match="must be an existing .npz file"):
        load_model(str(folders["vit-imgcls"]), inputs=str(tmp_path / "none.npz"))


def _edit_config(folder, tmp_path, **changes):
    import shutil

    copy = tmp_path / f"edited-{'-'.join(changes)}"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    config.update(changes)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_an_architecture_transformers_lacks_is_refused(folders, tmp_path):
    folder = _edit_config(folders["bert-seqcls"], tmp_path, architectures=["BertForNothing"])
    with pytest.raises(ModelLoadError, match="names architecture 'BertForNothing', which "
                                             "transformers .* does not have"):
        load_model(str(folder))


def test_remote_code_is_refused_and_why(folders, tmp_path):
    folder = _edit_config(folders["bert-seqcls"], tmp_path,
                          auto_map={"AutoModel": "modeling_evil.Evil"})
    (folder / "modeling_evil.py").write_text("raise SystemExit('ran remote code')\n")
    with pytest.raises(ModelLoadError, match="needs custom code.*never runs code from a "
                                             "model folder"):
        load_model(str(folder))


def test_pooling_is_asked_for_never_silent(folders):
    with pytest.raises(ModelLoadError, match="pooling 'mean' needs an encoder without a head"):
        load_model(str(folders["bert-seqcls"]), pooling="mean")


def test_the_cli_takes_inputs_and_says_what_is_wrong(factory, tmp_path, capsys):
    out = tmp_path / "two.onnx"
    assert main(["export", factory, "--input", "ids:1x16:int64", "--input",
                 "mask:1x16:int64", "-o", str(out)]) in (0, None)
    assert out.exists()
    code = main(["export", factory, "--input", "ids:1x16:int64", "-o", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "takes 2 inputs (ids, mask)" in err[0]


def test_describe_names_every_input():
    assert describe([TensorSpec("a", ("batch", 4), "int64"), TensorSpec("b", ("batch",))]) \
        == "a (int64, batch x 4), b (float32, batch)"
