"""Recovery of a pruned causal LM by distillation through the one training loop, and the
``slimkit prune`` / ``slimkit distill`` routes for causal LMs, on tiny random-init decoders."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from slimkit.cli import main  # noqa: E402
from slimkit.errors import InputError  # noqa: E402
from slimkit.llm.distill import LLMDistillConfig, distill_llm  # noqa: E402
from slimkit.llm.load import load_causal_lm  # noqa: E402
from slimkit.llm.prune import LLMPruneConfig, prune_llm  # noqa: E402
from slimkit.testing.llm import tiny_llama_folder  # noqa: E402

CAL = {"windows": 2, "window": 64}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("ldistill"))


@pytest.fixture(scope="module")
def teacher(folder):
    return load_causal_lm(folder)


def test_distillation_lowers_kl_to_the_teacher(teacher, tmp_path):
    student = prune_llm(teacher, LLMPruneConfig(method="width", ffn_ratio=0.5, head_ratio=0.5,
                                                round_to=8, **CAL)).model
    before = [p.detach().clone() for p in student.module.parameters()]
    result = distill_llm(student, teacher, config=LLMDistillConfig(
        steps=24, window=32, lr=3e-3, hidden_weight=0.1, threads=1))
    report = result.report
    assert report["kl_after"] < 0.92 * report["kl_before"], report  # measured 0.86
    assert report["steps"] == 24 and report["tokens"] == 24 * 4 * 32
    assert report["seconds"]["cpu"] > 0 and report["text"]["split"] == "calibration"
    for p, q in zip(student.module.parameters(), before, strict=True):  # the input is a copy
        assert torch.equal(p, q)
    saved = load_causal_lm(result.save(tmp_path / "student"))
    assert json.loads((tmp_path / "student" / "slimkit_distill.json").read_text())["steps"] == 24
    ids = torch.arange(3, 30)[None]
    torch.testing.assert_close(saved.module(ids), result.model.module(ids).detach(),
                               atol=1e-6, rtol=1e-6)


def test_a_sparse_student_keeps_its_zeros(teacher):
    student = prune_llm(teacher, LLMPruneConfig(method="wanda", pattern="2:4", **CAL)).model
    result = distill_llm(student, teacher, config=LLMDistillConfig(steps=3, window=64,
                                                                   lr=1e-3))
    for name, m in result.model.module.named_modules():
        if isinstance(m, torch.nn.Linear) and ".layers." in name:
            zeros = (m.weight.reshape(m.out_features, -1, 4) == 0).sum(-1)
            assert (zeros >= 2).all(), name
    assert result.report["sparse_layers_kept"] == 14


def test_distill_refuses_bad_config_and_text(teacher, tmp_path):
    with pytest.raises(InputError):
        LLMDistillConfig(steps=0)
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    with pytest.raises(InputError, match="fewer than one window"):
        distill_llm(teacher, teacher, str(short), LLMDistillConfig(steps=1, window=64))


def test_cli_prune_then_distill_a_causal_lm(folder, tmp_path, capsys):
    pruned = tmp_path / "pruned"
    assert main(["prune", str(folder), "-o", str(pruned), "--method", "depth", "--ratio",
                 "0.5", "--windows", "2", "--window", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["depth"]["layers_after"] == 1
    assert (pruned / "config.json").is_file() and (pruned / "slimkit_prune.json").is_file()
    out = tmp_path / "distilled"
    assert main(["distill", str(folder), "--student", str(pruned), "--data",
                 "builtin:python-reference:calibration", "-o", str(out), "--max-steps", "2",
                 "--window", "64"]) == 0
    assert "CPU minutes" in capsys.readouterr().out
    assert load_causal_lm(out).module.model.config.num_hidden_layers == 1


def test_cli_two_four_and_its_bad_input(folder, tmp_path, capsys):
    assert main(["prune", str(folder), "-o", str(tmp_path / "s"), "--method", "sparsegpt",
                 "--pattern", "2:4", "--windows", "2", "--window", "64"]) == 0
    assert "none on dense runtimes" in capsys.readouterr().out
    assert main(["prune", str(folder), "-o", str(tmp_path / "w"), "--method", "width",
                 "--pattern", "2:4"]) == 2
    assert "pattern 2:4 applies to" in capsys.readouterr().err
    assert main(["prune", str(folder), "-o", str(tmp_path / "u"), "--unstructured"]) == 2
    assert "do not apply to a causal LM" in capsys.readouterr().err


def test_cli_refuses_a_foreign_output_folder_before_any_work(folder, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["prune", str(folder), "-o", str(busy), "--method", "depth"]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert main(["distill", str(folder), "--student", str(folder), "--data",
                 "builtin:python-reference:calibration", "-o", str(busy)]) == 2
    assert (busy / "notes.txt").read_text(encoding="utf-8") == "mine"
