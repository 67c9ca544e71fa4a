"""Export of causal LMs for generation (ORT GenAI layout), verified against torch; the folder
runs in ONNX Runtime through slimkit and unchanged in onnxruntime-genai."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime_genai", reason="exporting causal LMs needs onnxruntime-genai "
                    "(pip install 'slimkit[llm]')")

from slimkit.errors import ExportError, OutputPathError  # noqa: E402
from slimkit.llm import evaluate as ev  # noqa: E402
from slimkit.llm.engine import Engine  # noqa: E402
from slimkit.llm.export import export_for_generation  # noqa: E402
from slimkit.llm.load import load_causal_lm  # noqa: E402
from slimkit.llm.runtime import open_runtime  # noqa: E402
from slimkit.testing.llm import tiny_causal_lm, tiny_llama_folder  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    model = load_causal_lm(tiny_llama_folder(root))
    return model, export_for_generation(model, root / "gen")


def test_genai_folder_layout(exported):
    model, result = exported
    genai = json.loads((result.folder / "genai_config.json").read_text())
    decoder = genai["model"]["decoder"]
    assert genai["model"]["type"] == "llama"
    assert decoder["num_hidden_layers"] == 2 and decoder["num_key_value_heads"] == 2
    assert decoder["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert decoder["outputs"]["present_value_names"] == "present.%d.value"
    for name in ("tokenizer.json", "tokenizer_config.json", "model.onnx", "slimkit_export.json"):
        assert (result.folder / name).is_file(), name
    ops = result.report["op_types"]
    assert ops["GroupQueryAttention"] == 2 and ops["SkipSimplifiedLayerNormalization"] >= 2
    assert result.report["last_token_head"] and ops["Slice"] == 1  # slimkit's last-token head


def test_prefill_computes_the_lm_head_for_the_last_position_only(exported):
    model, result = exported
    runtime = open_runtime(result.model)
    ids = np.array([[3, 17, 99, 250, 4]])
    logits, present = runtime._run(ids, np.ones_like(ids), runtime._empty(1))
    assert logits.shape == (1, 1, 320) and present[0].shape[2] == 5
    full = runtime.forward(ids)
    assert full.shape == (1, 5, 320)
    np.testing.assert_allclose(full[:, -1:], logits, atol=1e-5, rtol=1e-5)


def test_export_is_verified_on_prefill_and_decode(exported):
    _, result = exported
    verification = result.report["verification"]
    assert verification["decode_steps"] == 16 and verification["same_greedy_tokens"]
    assert verification["max_abs_logit_diff"] <= 1e-4


def test_onnx_runtime_logits_and_perplexity_match_torch(exported):
    model, result = exported
    ids = np.array([[3, 17, 99, 250, 4, 8, 15, 16]])
    torch_logits = open_runtime(model).forward(ids)
    ort_logits = open_runtime(result.model).forward(ids)
    np.testing.assert_allclose(ort_logits, torch_logits, atol=1e-4, rtol=1e-4)
    config = ev.PerplexityConfig(window=64, stride=32, max_tokens=160)
    both = ev.compare(result.model, model, config)
    assert abs(both["perplexity_change"]) < 1e-3  # within 0.1%
    assert both["top1_agreement"] == 1.0 and both["kl_mean"] < 1e-8


def test_onnx_batched_decode_equals_one_at_a_time(exported):
    _, result = exported
    engine = Engine(open_runtime(result.model))
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13]]
    alone = [engine.run(p, max_new_tokens=5).generated for p in prompts]
    states = [engine.start(p, max_new_tokens=5) for p in prompts]
    while not all(s.done for s in states):
        engine.step(states)
    assert [s.generated for s in states] == alone


@pytest.mark.parametrize("arch", ["qwen2", "mistral", "phi3"])
def test_other_llama_family_architectures_export(tmp_path, arch):
    model = load_causal_lm(tiny_llama_folder(tmp_path, arch))
    result = export_for_generation(model, tmp_path / "gen")
    assert result.report["verification"]["same_greedy_tokens"]
    assert result.report["op_types"]["GroupQueryAttention"] == 2


def test_unsupported_architecture_is_one_line(tmp_path):
    import transformers

    from slimkit.llm.load import _model

    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2)
    gpt2 = _model(transformers.GPT2LMHeadModel(config), None, "gpt2", "gpt2-tiny")
    with pytest.raises(ExportError, match="GPT2LMHeadModel .* not supported; supported: ") as e:
        export_for_generation(gpt2, tmp_path / "gen")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "gen").exists()


def test_export_refuses_a_non_empty_folder(tmp_path, exported):
    model, _ = exported
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="not an empty folder"):
        export_for_generation(model, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_exported_folder_runs_unchanged_in_onnxruntime_genai(exported):
    og = pytest.importorskip("onnxruntime_genai")
    model, result = exported
    prompt = [5, 6, 7, 8]
    ours = Engine(open_runtime(result.model), stop_token_ids=()).run(prompt, 8).generated
    reference = Engine(open_runtime(model), stop_token_ids=()).run(prompt, 8).generated
    genai_model = og.Model(str(result.folder))
    params = og.GeneratorParams(genai_model)
    params.set_search_options(max_length=len(prompt) + 8, do_sample=False, min_length=0)
    generator = og.Generator(genai_model, params)
    generator.append_tokens(np.array(prompt, np.int32))
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert ours == reference
    assert tokens == ours[:len(tokens)]  # GenAI stops early at the end-of-sequence token
    assert len(tokens) == len(ours) or tokens[-1] == genai_model_eos(result.folder)
    tokenizer = og.Tokenizer(genai_model)
    assert len(tokenizer.encode("The while statement")) > 0


def genai_model_eos(folder):
    return json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"]


def test_tiny_gguf_free_model_is_rebuilt_for_saving(tmp_path):
    from slimkit.llm.load import rebuild_plain

    hf = tiny_causal_lm("llama")
    hf.config.quantization_config = {"quant_method": "gguf"}
    plain = rebuild_plain(hf)
    assert getattr(plain.config, "quantization_config", None) is None
    assert plain.lm_head.weight.data_ptr() == plain.model.embed_tokens.weight.data_ptr()
