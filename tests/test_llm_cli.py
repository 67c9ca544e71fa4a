"""``slimkit generate``, ``slimkit perplexity`` and ``slimkit export`` of a causal LM, on a tiny
random-init Llama."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from slimkit.cli import main  # noqa: E402
from slimkit.testing.llm import tiny_llama_folder  # noqa: E402


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("cli"))


def test_generate_streams_text_and_reports(tiny_folder, capsys):
    code = main(["generate", str(tiny_folder), "--prompt", "The while statement",
                 "--max-new-tokens", "5", "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 0 and "5 tokens, torch, first token" in err and out.strip()


def test_generate_json_with_sampling(tiny_folder, capsys):
    argv = ["generate", str(tiny_folder), "--prompt", "x", "--max-new-tokens", "4", "--json",
            "--temperature", "0.7", "--top-p", "0.9", "--seed", "3"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["text"] == first["text"]


def test_generate_bad_input_is_one_line(tmp_path, tiny_folder, capsys):
    bare = tiny_llama_folder(tmp_path, chat_template=False)
    assert main(["generate", str(bare), "--prompt", "hi", "--chat"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slimkit: error:") and "no chat template" in err and "\n" not in err
    assert main(["generate", str(tiny_folder), "--prompt", "word " * 600]) == 2
    assert "--truncate" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "missing.gguf"), "--prompt", "hi"]) == 2


def test_perplexity_json(tiny_folder, capsys):
    argv = ["perplexity", str(tiny_folder), "--window", "64", "--stride", "32",
            "--max-tokens", "128", "--json", "--reference", str(tiny_folder)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["window"] == 64 and result["stride"] == 32
    assert result["text"]["source"] == "builtin:python-reference"
    assert result["kl_mean"] == pytest.approx(0, abs=1e-9)
    assert main(["perplexity", str(tiny_folder), "--stride", "0"]) == 2


def test_export_writes_a_generation_folder_that_generate_runs(tiny_folder, tmp_path, capsys):
    pytest.importorskip("onnxruntime_genai")
    out = tmp_path / "gen"
    assert main(["export", str(tiny_folder), "-o", str(out)]) == 0
    assert "same greedy tokens" in capsys.readouterr().out
    assert main(["generate", str(out), "--prompt", "The while", "--max-new-tokens", "3"]) == 0
    assert "onnxruntime" in capsys.readouterr().err
    assert main(["generate", str(out), "--prompt", "x", "--runtime", "torch"]) == 2
