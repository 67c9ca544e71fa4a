import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from slimkit.cli import main
from slimkit.data import Dataset
from slimkit.errors import DataError
from slimkit.evaluate.diff import behaviour_diff, changed_neighbours, per_class_deltas, softmax
from slimkit.evaluate.metrics import predict
from slimkit.model import Task
from slimkit.testing import tiny_model


def perturbed(model, scale: float, seed: int = 0):
    module = copy.deepcopy(model.module)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return replace(model, name=f"{model.name}-noisy", module=module)


def labelled(model, n: int = 64):
    x = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    data = Dataset({"input": x})
    return Dataset({"input": x}, labels=predict(model, data).argmax(1))


def test_classifier_diff_lists_agreement_classes_flips_and_layers(one_torch_thread):
    original = tiny_model("mlp")
    data = labelled(original)
    d = behaviour_diff(original, perturbed(original, 0.3), data)
    pred = predict(perturbed(original, 0.3), data).argmax(1)
    flips = int(np.sum(pred != data.labels))
    assert flips > 0 and d.flipped_total == flips
    assert d.top1_agreement == pytest.approx(1 - flips / len(data))
    assert d.accuracy["original"] == 1.0
    assert sum(row["examples"] for row in d.per_class) == len(data)
    confidences = [row["original_confidence"] for row in d.flipped]
    assert confidences == sorted(confidences, reverse=True)
    assert all(row["original"] != row["compressed"] for row in d.flipped)
    assert [row["layer"] for row in d.layer_sqnr] == ["fc1", "fc2"]  # torch, same structure
    assert all(row["sqnr_db"] < 60 for row in d.layer_sqnr)


def test_identical_models_agree_everywhere(one_torch_thread):
    m = tiny_model("mlp")
    d = behaviour_diff(m, m, labelled(m, 16)).to_dict()
    assert d["top1_agreement"] == 1.0 and d["flipped"] == [] and d["kind"] == "behaviour_diff"
    assert all(row["sqnr_db"] == "inf" for row in d["layer_sqnr"])
    json.dumps(d, allow_nan=False)  # strict JSON: no inf/nan floats


def test_different_structure_has_no_layer_comparison_and_says_why(one_torch_thread):
    from slimkit.prune import PruneConfig, prune

    m = tiny_model("mlp")
    pruned = prune(m, PruneConfig(ratio=0.5, round_to=4)).model
    d = behaviour_diff(m, pruned, labelled(m, 16))
    assert d.layer_sqnr == [] and "differ in structure" in d.layer_sqnr_note


def test_onnx_intermediate_outputs_are_matched_by_name(tmp_path, one_torch_thread):
    from slimkit.export.onnx import export_onnx

    m = tiny_model("cnn")
    exported = export_onnx(m, tmp_path / "m.onnx").model
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    d = behaviour_diff(m, exported, Dataset({"input": x}))
    assert d.top1_agreement == 1.0 and len(d.layer_sqnr) >= 2
    assert all(row["sqnr_db"] == "inf" or row["sqnr_db"] > 80 for row in d.layer_sqnr)


def test_encoders_get_neighbour_changes(one_torch_thread):
    m = replace(tiny_model("mlp"), task=Task.EMBEDDING)
    x = np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32)
    d = behaviour_diff(m, perturbed(m, 0.5), Dataset({"input": x}), k=3, layers=False)
    assert d.top1_agreement is None and "cosine_mean" in d.embedding
    assert d.neighbours and all(row["changed"] >= 1 for row in d.neighbours)


def test_pure_helpers():
    assert np.allclose(softmax(np.array([[1000.0, 1000.0]])), 0.5)
    rows = per_class_deltas(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]))
    assert rows[0] == {"class": 0, "examples": 2, "original": 1.0, "compressed": 0.5,
                       "delta": -0.5}
    same = np.eye(5)
    assert changed_neighbours(same, same, k=2) == []


def test_mismatched_outputs_are_refused(one_torch_thread):
    mlp, cnn = tiny_model("mlp"), tiny_model("cnn")
    other = replace(cnn, module=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3)))
    x = np.zeros((4, 3, 8, 8), np.float32)
    with pytest.raises(DataError, match="cannot be compared"):
        behaviour_diff(cnn, other, Dataset({"input": x}))
    assert mlp is not None


def test_cli_diff_writes_a_report_section(tmp_path, capsys, one_torch_thread):
    from slimkit.export.onnx import export_onnx

    model = tiny_model("cnn")
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(model, onnx_path)
    x = np.random.default_rng(0).standard_normal((24, 3, 8, 8)).astype(np.float32)
    labels = predict(model, Dataset({"input": x})).argmax(1)
    np.savez(tmp_path / "data.npz", input=x, labels=labels)
    out = tmp_path / "diff.json"
    code = main(["diff", "slimkit.testing:tiny_cnn", str(onnx_path), "--input-shape", "1x3x8x8",
                 "--data", str(tmp_path / "data.npz"), "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1 agreement 1.0000" in printed and "Per-class accuracy" in printed
    section = json.loads(out.read_text())
    assert section["kind"] == "behaviour_diff" and section["flipped"] == []
    assert len(section["per_class"]) == len(set(labels.tolist()))
    from slimkit.report.html import build_html, load_run

    assert "Per-class accuracy" in build_html(load_run(tmp_path))


@pytest.mark.slow
def test_cli_diff_of_digits_cnn_and_its_static_int8_version(tmp_path, capsys):
    q = tmp_path / "x.onnx"
    assert main(["quantize", "builtin:digits-cnn", "--mode", "static", "--calib",
                 "builtin:digits:train", "-o", str(q)]) == 0
    capsys.readouterr()
    assert main(["diff", "builtin:digits-cnn", str(q), "--data", "builtin:digits:test"]) == 0
    printed = capsys.readouterr().out
    assert "top-1 agreement" in printed and "Per-class accuracy" in printed
    assert "Flipped predictions" in printed and "Per-layer output SQNR" in printed
