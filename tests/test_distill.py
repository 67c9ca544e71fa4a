"""Distillation: loss maths against closed forms, output/hint adapters, shape errors, resume
equal to an uninterrupted run, early stopping, students from the teacher, saving."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from slimkit import load_model
from slimkit.data import Dataset
from slimkit.distill import (
    DistillConfig,
    distill,
    embedding_cosine,
    finetune_loss,
    kd_loss,
    kept_layers,
    narrow_student,
    save_student,
    shallow_student,
    soft_kl,
)
from slimkit.errors import InputError
from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec
from slimkit.testing import TinyCNN, TinyMLP, tiny_model


def mlp(seed: int, hidden: int = 16, classes: int = 4) -> Model:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = TinyMLP(hidden=hidden, classes=classes).eval()
    return Model(name=f"mlp{seed}", source="slimkit.testing:tiny_mlp", module=module,
                 inputs=(TensorSpec("input", (DYNAMIC_BATCH, 8)),), task=Task.CLASSIFICATION)


def data(n: int = 48, labels: bool = True, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return Dataset({"input": x}, rng.integers(0, 4, n) if labels else None)


def test_soft_kl_closed_form():
    s, t = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]])
    # T = 1: KL(t || s) with t = (1/2, 1/2), s = (1/4, 3/4)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(soft_kl(s, t, 1.0)) == pytest.approx(expected, rel=1e-6)
    assert float(soft_kl(2 * s, 2 * t, 2.0)) == pytest.approx(4 * expected, rel=1e-6)


def test_kd_loss_weights_and_unlabelled():
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(kd_loss(s, t, y, 3.0, 0.0), F.cross_entropy(s, y))
    mixed = 0.25 * soft_kl(s, t, 3.0) + 0.75 * F.cross_entropy(s, y)
    assert torch.allclose(kd_loss(s, t, y, 3.0, 0.25), mixed)
    assert torch.allclose(kd_loss(s, t, None, 3.0, 0.25), soft_kl(s, t, 3.0))
    with pytest.raises(InputError, match="no labels"):
        kd_loss(s, t, None, 3.0, 0.0)
    assert float(embedding_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))) == 1.0


def test_distill_brings_student_towards_teacher(one_torch_thread):
    teacher, student = mlp(0), mlp(1)
    val = data(32, labels=False, seed=1)
    cfg = DistillConfig(loss="kd", temperature=2.0, max_steps=60, epochs=100, lr=0.01)
    r = distill(student, teacher, data(labels=False), cfg, val=val)
    v = r.sections["validation"]
    assert v["metric"] == "top1_agreement_with_teacher"
    assert v["after"] > v["before"]
    assert r.sections["steps"] == 60 and r.sections["seed"] == 0
    x = torch.from_numpy(val.inputs["input"])
    assert not torch.equal(student.module(x), r.model.module(x))  # the input is untouched


def test_output_shape_mismatch_names_shapes_and_adapter():
    with pytest.raises(InputError, match=r"\(2, 3\).*\(2, 4\).*same number of classes"):
        distill(mlp(1, classes=3), mlp(0), data(), DistillConfig(max_steps=1))
    with pytest.raises(InputError, match=r"\(2, 3\).*\(2, 4\).*Linear\(in_features=3, "
                                         r"out_features=4.*output_adapter=True"):
        distill(mlp(1, classes=3), mlp(0), data(), DistillConfig(loss="embedding-mse",
                                                                  max_steps=1))
    r = distill(mlp(1, classes=3), mlp(0), data(labels=False),
                DistillConfig(loss="embedding-cosine", output_adapter=True, max_steps=2),
                val=data(8, labels=False))
    assert "Linear" in r.sections["adapters"]["output"]


def cnn(seed: int, width: int) -> Model:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = TinyCNN().eval()
        if width != 8:
            module.conv, module.bn = nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width)
            module.fc = nn.Linear(width, 4)
    return Model(name=f"cnn{width}", source="x", module=module.eval(),
                 inputs=(TensorSpec("input", (DYNAMIC_BATCH, 3, 8, 8)),))


def test_hint_pairs_get_a_1x1_conv_adapter(one_torch_thread):
    x = Dataset({"input": np.random.default_rng(0).normal(size=(16, 3, 8, 8)).astype("f4")})
    cfg = DistillConfig(features=(("bn", "bn"),), max_steps=3)
    r = distill(cnn(1, 4), cnn(0, 8), x, cfg)
    assert r.sections["adapters"]["bn"].startswith("Conv2d(4, 8, kernel_size=(1, 1)")
    with pytest.raises(InputError, match="no layer named"):
        distill(cnn(1, 4), cnn(0, 8), x, DistillConfig(features=(("nope", "bn"),)))
    with pytest.raises(InputError, match=r"\(2, 4, 8, 8\).*\(2, 4\)"):
        distill(cnn(1, 4), cnn(0, 8), x, DistillConfig(features=(("bn", "fc"),)))


def test_resume_gives_the_uninterrupted_result(tmp_path, one_torch_thread):
    teacher, student, train = mlp(0), mlp(1), data()
    cfg = dict(loss="kd", alpha=0.5, lr=0.01, batch_size=8, epochs=10, checkpoint_every=2)
    whole = distill(student, teacher, train, DistillConfig(max_steps=9, **cfg),
                    checkpoint=tmp_path / "a")
    distill(student, teacher, train, DistillConfig(max_steps=5, **cfg), checkpoint=tmp_path / "b")
    resumed = distill(student, teacher, train, DistillConfig(max_steps=9, **cfg),
                      checkpoint=tmp_path / "b", resume=True)
    assert resumed.sections["resumed_from"] == 5 and resumed.sections["steps"] == 9
    for (name, a), (_, b) in zip(whole.model.module.state_dict().items(),
                                 resumed.model.module.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(InputError, match="other settings.*lr"):
        distill(student, teacher, train, DistillConfig(max_steps=9, **{**cfg, "lr": 0.1}),
                checkpoint=tmp_path / "b", resume=True)
    (tmp_path / "b" / "checkpoint.safetensors").write_bytes(b"damaged")
    with pytest.raises(InputError, match="checksum"):
        distill(student, teacher, train, DistillConfig(max_steps=9, **cfg),
                checkpoint=tmp_path / "b", resume=True)


def test_early_stop_returns_the_best(one_torch_thread):
    teacher = mlp(0)
    cfg = DistillConfig(max_steps=50, epochs=100, eval_every=1, patience=2, lr=1e-6)
    r = distill(teacher, teacher, data(labels=False), cfg, val=data(16, labels=False))
    assert r.sections["stopped_early"] and r.sections["steps"] == 3
    assert r.sections["validation"]["best_step"] == 1


@pytest.mark.parametrize("bad", [{"temperature": 0}, {"alpha": 1.5}, {"loss": "l2"},
                                 {"optimizer": "lbfgs"}, {"batch_size": 0}, {"max_steps": 0},
                                 {"patience": -1}])
def test_bad_config(bad):
    with pytest.raises(InputError):
        DistillConfig(**bad)


def test_config_round_trip():
    cfg = DistillConfig(features=(("a", "b"),), loss="embedding-mse", max_steps=3)
    assert DistillConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_kept_layers_and_narrow_student():
    assert kept_layers(6, 2) == [1, 3, 5] and kept_layers(4, 4) == [3]
    assert narrow_student(tiny_model("cnn"), 0.5, round_to=2).model.module.conv.out_channels == 4
    with pytest.raises(InputError, match="not a Hugging Face encoder"):
        shallow_student(tiny_model("mlp"))


def tiny_bert() -> Model:
    transformers = pytest.importorskip("transformers")
    from slimkit.load.hf import MeanPooledEncoder

    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        hf = transformers.BertModel(config, add_pooling_layer=False).eval()
    specs = tuple(TensorSpec(n, (DYNAMIC_BATCH, "sequence"), "int64", 50 if n == "input_ids"
                             else None) for n in ("input_ids", "attention_mask"))
    return Model(name="bert", source="tiny-bert", module=MeanPooledEncoder(hf).eval(),
                 inputs=specs, output_names=("embedding",), task=Task.EMBEDDING)


def test_shallow_student_saves_and_loads(tmp_path, one_torch_thread):
    teacher = tiny_bert()
    student = shallow_student(teacher, keep_every=2)
    hf = student.module.model
    assert len(hf.encoder.layer) == 2 and hf.config.num_hidden_layers == 2
    t_layers = teacher.module.model.encoder.layer
    assert torch.equal(hf.encoder.layer[0].output.dense.weight, t_layers[1].output.dense.weight)
    assert len(teacher.module.model.encoder.layer) == 4  # the teacher is untouched
    rng = np.random.default_rng(0)
    train = Dataset({"input_ids": rng.integers(0, 50, (16, 6)).astype("int64"),
                     "attention_mask": np.ones((16, 6), np.int64)})
    r = distill(student, teacher, train, DistillConfig(loss="embedding-cosine", max_steps=2))
    folder = r.save(tmp_path / "student")
    loaded = load_model(str(folder))
    args = student.torch_args(train.first_batch(4))
    with torch.no_grad():
        np.testing.assert_allclose(loaded.module(*args).numpy(), r.model.module(*args).numpy(),
                                   atol=1e-6, rtol=1e-6)
    with pytest.raises(InputError, match="not an empty folder"):
        r.save(folder)
    with pytest.raises(InputError, match=r"keep_every must be an integer in \[2, 4\]"):
        shallow_student(teacher, keep_every=5)


def test_save_pruned_and_plain_students(tmp_path):
    pruned = narrow_student(tiny_model("cnn"), 0.5, round_to=2)
    folder = save_student(pruned.model, tmp_path / "narrow", pruned.plan)
    assert load_model(str(folder)).module.conv.out_channels == 4
    plain = save_student(load_model("slimkit.testing:tiny_mlp"), tmp_path / "plain")
    assert load_model(str(plain)).module.fc1.out_features == 16


def test_finetune_loss_plugs_into_the_finetuning_hook(one_torch_thread):
    from slimkit import train as finetune
    teacher, student = mlp(0), mlp(1)
    hooks = finetune.TrainHooks(loss_fn=finetune_loss(DistillConfig(alpha=0.7)), teacher=teacher)
    result = finetune.finetune(student, data(), finetune.FinetuneConfig(epochs=2, lr=0.01),
                               hooks)
    assert len(result.losses) == 2 and all(math.isfinite(x) for x in result.losses)


def test_cli_distill_pruned_digits_student(tmp_path, capsys, one_torch_thread):
    from slimkit.cli import main

    out = tmp_path / "student"
    code = main(["--quiet", "distill", "builtin:digits-cnn", "--prune-ratio", "0.5",
                 "--data", "builtin:digits:train", "--val", "builtin:digits:val",
                 "--max-steps", "3", "-o", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["validation"]["metric"] == "accuracy" and report["steps"] == 3
    loaded = load_model(str(out))
    assert loaded.module.features[0].out_channels == 16
    assert main(["distill", "builtin:digits-cnn", "--student", "slimkit.testing:tiny_mlp",
                 "--data", "builtin:digits:train", "-o", str(tmp_path / "y")]) == 2
    assert "differs from teacher output shape (2, 10)" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
