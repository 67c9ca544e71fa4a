"""W8A8 on the real model (SmolLM2-135M-Instruct): slow, run with ``pytest -m slow``. The speed
target is checked by benchmarks/bench_llm_w8a8.py, not here."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime_genai")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from slimkit.errors import MissingDependencyError
    from slimkit.llm.load import load_smollm2

    try:
        return load_smollm2()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


def test_smoothing_is_exact_on_smollm2(smollm2):
    import copy

    import torch

    from slimkit.llm.load import hf_module
    from slimkit.llm.w8a8 import sites

    hf = copy.deepcopy(hf_module(smollm2))
    ids = torch.arange(100, 164)[None]
    with torch.no_grad():
        before = hf(input_ids=ids).logits
        gen = torch.Generator().manual_seed(0)
        for site in sites.decoder_sites(hf):
            n = sites.source_channels(hf, site)
            sites.fold(hf, site, torch.exp(0.5 * torch.randn(n, generator=gen)))
        after = hf(input_ids=ids).logits
    rel = float((after - before).abs().max() / before.abs().max())
    assert rel <= 1e-5


def test_w8a8_smollm2_holds_perplexity(smollm2, tmp_path):
    from slimkit.llm.evaluate import PerplexityConfig
    from slimkit.llm.w8a8 import AdvancedW8A8, W8A8Config, quantize_w8a8

    config = W8A8Config(evaluation=PerplexityConfig(max_tokens=1024), speed=None,
                        advanced=AdvancedW8A8(calibration_tokens=2048, search_tokens=512))
    result = quantize_w8a8(smollm2, tmp_path / "w8a8", config, threads=2)
    graph, fidelity = result.report["graph"], result.report["fidelity"]
    assert graph["integer_kernels"]["integer_kernels_in_optimised_graph"] == 150
    assert fidelity["perplexity_change"] <= 0.04  # +2.1% measured on these 1,024 tokens
    assert fidelity["kl_mean"] <= 0.03 and fidelity["top1_agreement"] >= 0.9
    # the folder runs unchanged in ONNX Runtime GenAI, greedy, like slimkit's engine
    import numpy as np
    import onnxruntime_genai as og

    from slimkit.llm.engine import Engine
    from slimkit.llm.runtime import open_runtime

    prompt = smollm2.tokenizer("The while statement is used for")["input_ids"]
    ours = Engine(open_runtime(result.model, threads=2), stop_token_ids=()).run(prompt, 8)
    genai = og.Model(str(result.folder))
    params = og.GeneratorParams(genai)
    params.set_search_options(max_length=len(prompt) + 8, do_sample=False)
    generator = og.Generator(genai, params)
    generator.append_tokens(np.asarray(prompt, np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    theirs = [int(t) for t in generator.get_sequence(0)[len(prompt):]]
    assert theirs == ours.generated[:len(theirs)] and len(theirs) >= 4
