"""Pruning of decoder LMs (slimkit.llm.prune) on tiny random-init decoders: unstructured and
2:4 masks, Wanda and SparseGPT against magnitude on a closed-form layer, GQA-consistent width
pruning, depth pruning, and the bad inputs of issue 18."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from slimkit.errors import DataError, InputError  # noqa: E402
from slimkit.llm.load import load_causal_lm  # noqa: E402
from slimkit.llm.prune import LLMPruneConfig, prune_llm  # noqa: E402
from slimkit.llm.prune.sparse import (  # noqa: E402
    magnitude_mask,
    nm_mask,
    sparsegpt_prune,
    wanda_mask,
)
from slimkit.testing.llm import tiny_causal_lm, tiny_llama_folder  # noqa: E402

ARCHS = ("llama", "qwen2", "mistral")
CAL = {"windows": 2, "window": 64}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lprune")
    return {arch: load_causal_lm(tiny_llama_folder(root, arch)) for arch in ARCHS}


def decoder_linears(model):
    return [(n, m) for n, m in model.module.named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in n]


def logits(model, ids=None):
    ids = torch.arange(3, 40)[None] if ids is None else ids
    with torch.no_grad():
        return model.module(ids)


# ---- the maths of one layer -------------------------------------------------------------

def test_nm_mask_keeps_exactly_n_of_every_m():
    scores = torch.rand(16, 32, generator=torch.Generator().manual_seed(0))
    mask = nm_mask(scores, 2, 4)
    assert (mask.reshape(16, 8, 4).sum(-1) == 2).all()
    kept = torch.where(mask, torch.zeros_like(scores), scores).reshape(16, 8, 4)
    dropped = torch.where(mask, scores, torch.full_like(scores, -1)).reshape(16, 8, 4)
    assert (kept.max(-1).values >= dropped.max(-1).values).all()


def _layer_case():
    """A Linear whose input features differ in scale (what Wanda reads; magnitude ignores it)
    and are correlated through a shared component (what SparseGPT's error compensation
    uses)."""
    g = torch.Generator().manual_seed(0)
    scales = torch.logspace(-1, 1, 64)[torch.randperm(64, generator=g)]
    mix = torch.eye(64) + torch.randn(64, 64, generator=g) / 16
    shared = torch.randn(512, 1, generator=g)
    x = (torch.randn(512, 64, generator=g) @ mix + 0.8 * shared) * scales
    return x, torch.randn(32, 64, generator=g)


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_wanda_and_sparsegpt_lose_less_than_magnitude(nm):
    x, w = _layer_case()
    reference = x @ w.T

    def error(pruned):
        return float((x @ pruned.T - reference).norm() / reference.norm())

    magnitude = error(w.masked_fill(magnitude_mask(w, 0.5, nm), 0.0))
    wanda = error(w.masked_fill(wanda_mask(w, x.pow(2).sum(0), 0.5, nm), 0.0))
    sparsegpt, mask = sparsegpt_prune(w, x.T @ x, 0.5, nm, damp=0.01, block=16)
    assert math.isclose(float(mask.float().mean()), 0.5, abs_tol=0.01)
    assert float((sparsegpt == 0).float().mean()) >= 0.5
    assert wanda < 0.5 * magnitude, (wanda, magnitude)
    assert error(sparsegpt) < 0.95 * wanda, (error(sparsegpt), wanda)


# ---- unstructured and 2:4 on tiny decoders ----------------------------------------------

@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_two_four_masks_are_exactly_two_of_every_four(tiny, method):
    result = prune_llm(tiny["llama"], LLMPruneConfig(method=method, pattern="2:4", **CAL))
    for name, linear in decoder_linears(result.model):
        zeros = (linear.weight.reshape(linear.out_features, -1, 4) == 0).sum(-1)
        assert (zeros == 2).all(), name
    assert result.report["sparsity"]["decoder_linear"] == 0.5
    assert result.report["bytes"]["after"]["sparse_format"] \
        < 0.8 * result.report["bytes"]["before"]["dense"]


def test_unstructured_sparsity_and_the_input_model_is_untouched(tiny):
    model = tiny["qwen2"]
    before = logits(model)
    result = prune_llm(model, LLMPruneConfig(method="wanda", ratio=0.6, **CAL))
    for name, linear in decoder_linears(result.model):
        share = float((linear.weight == 0).float().mean())
        assert abs(share - 0.6) < 0.02, (name, share)
    torch.testing.assert_close(logits(model), before, atol=0, rtol=0)
    assert result.report["check"]["finite"] and result.report["calibration"]["windows"] == 2


# ---- width ------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("unit", ["query", "group"])
def test_width_keeps_gqa_consistent_and_the_model_reloads(tiny, tmp_path, arch, unit):
    config = LLMPruneConfig(method="width", head_ratio=0.5, ffn_ratio=0.25, head_unit=unit,
                            round_to=8, **CAL)
    result = prune_llm(tiny[arch], config)
    hf = result.model.module.model
    heads, kv = (2, 2) if unit == "query" else (2, 1)
    assert (hf.config.num_attention_heads, hf.config.num_key_value_heads) == (heads, kv)
    assert hf.config.intermediate_size == 96 and hf.config.head_dim == 16
    for layer in hf.model.layers:
        attn = layer.self_attn
        assert attn.q_proj.out_features == heads * 16 == attn.o_proj.in_features
        assert attn.k_proj.out_features == kv * 16 == attn.v_proj.out_features
        assert attn.num_key_value_groups == heads // kv
        assert layer.mlp.gate_proj.out_features == layer.mlp.up_proj.out_features == 96
        assert layer.mlp.down_proj.in_features == 96
    again = load_causal_lm(result.save(tmp_path / "pruned"))
    torch.testing.assert_close(logits(again), logits(result.model), atol=1e-6, rtol=1e-6)
    assert result.plan is not None and len(result.plan.layers) > 0


def test_width_with_a_kv_cache_matches_the_full_forward(tiny):
    result = prune_llm(tiny["llama"], LLMPruneConfig(method="width", head_ratio=0.5,
                                                     round_to=8, **CAL))
    hf = result.model.module.model
    ids = torch.arange(5, 17)[None]
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
        full = hf(input_ids=out[:, :-1]).logits[0, ids.shape[1] - 1:].argmax(-1)
    assert out[0, ids.shape[1]:].tolist() == full.tolist()


# ---- depth ------------------------------------------------------------------------------

@pytest.mark.parametrize("criterion", ["block-influence", "angular"])
def test_depth_drops_the_chosen_layers(tmp_path, criterion):
    folder = tiny_llama_folder(tmp_path, "llama")
    original = tiny_causal_lm("llama")
    original.config.num_hidden_layers = 4
    original = type(original)(original.config).eval()
    original.save_pretrained(folder, safe_serialization=True)
    model = load_causal_lm(folder)
    result = prune_llm(model, LLMPruneConfig(method="depth", ratio=0.5,
                                             depth_criterion=criterion, **CAL))
    depth = result.report["depth"]
    assert len(depth["dropped"]) == 2 and depth["layers_after"] == 2
    kept = [i for i in range(4) if i not in depth["dropped"]]
    hf = result.model.module.model
    assert hf.config.num_hidden_layers == 2 and len(hf.model.layers) == 2
    for new, old in enumerate(kept):
        torch.testing.assert_close(hf.model.layers[new].mlp.up_proj.weight,
                                   original.model.layers[old].mlp.up_proj.weight)
        assert hf.model.layers[new].self_attn.layer_idx == new
    if criterion == "angular":
        assert depth["dropped"][1] == depth["dropped"][0] + 1  # one run of layers
    again = load_causal_lm(result.save(tmp_path / "depth"))
    torch.testing.assert_close(logits(again), logits(result.model), atol=1e-6, rtol=1e-6)


# ---- bad input --------------------------------------------------------------------------

def test_two_four_on_a_dimension_not_a_multiple_of_four_names_the_layer(tmp_path):
    import transformers

    model = tiny_causal_lm("llama")
    config = model.config
    config.intermediate_size = 130
    odd = transformers.LlamaForCausalLM(config).eval()
    folder = tiny_llama_folder(tmp_path, "llama")
    odd.save_pretrained(folder, safe_serialization=True)
    with pytest.raises(InputError, match=r"layers\.0\.mlp\.down_proj.*130.*multiple of 4"):
        prune_llm(load_causal_lm(folder), LLMPruneConfig(method="wanda", pattern="2:4", **CAL))


def test_calibration_text_shorter_than_one_window_is_refused(tiny, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("A few words only.", encoding="utf-8")
    with pytest.raises(DataError, match="fewer than one window of 64"):
        prune_llm(tiny["llama"], LLMPruneConfig(method="wanda", **CAL), calib=str(short))


def test_calibrating_on_the_evaluation_part_is_refused(tiny):
    with pytest.raises(InputError, match="calibration part"):
        prune_llm(tiny["llama"], LLMPruneConfig(method="wanda", **CAL),
                  calib="builtin:python-reference:evaluation")


@pytest.mark.parametrize("config, match", [
    (dict(method="width", head_ratio=0.9), r"self_attn' \(query heads per group\) empty"),
    (dict(method="width", ffn_ratio=0.999, round_to=1), r"down_proj' \(FFN neurons\) empty"),
    (dict(method="depth", ratio=0.99), "remove all 2 decoder layers"),
])
def test_a_ratio_that_would_empty_a_layer_is_refused(tiny, config, match):
    with pytest.raises(InputError, match=match):
        prune_llm(tiny["llama"], LLMPruneConfig(**config, **CAL))


@pytest.mark.parametrize("kwargs", [dict(ratio=1.0), dict(pattern="4:2"),
                                    dict(method="width", pattern="2:4"),
                                    dict(pattern="2:4", ratio=0.3), dict(method="prune")])
def test_config_refuses_what_cannot_work(kwargs):
    with pytest.raises(InputError):
        LLMPruneConfig(**kwargs)


@pytest.mark.parametrize("settings", [
    dict(method="width", head_ratio=0.5, ffn_ratio=0.25, round_to=8),
    dict(method="width", head_ratio=0.5, head_unit="group", round_to=8),
    dict(method="depth", ratio=0.5),
])
def test_pruned_models_export_for_generation(tiny, tmp_path, settings):
    import json

    pytest.importorskip("onnxruntime_genai")
    result = prune_llm(tiny["llama"], LLMPruneConfig(**settings, **CAL))
    exported = result.export(tmp_path / "gen")
    assert exported.report["verification"]["same_greedy_tokens"]
    decoder = json.loads((exported.folder / "genai_config.json").read_text())["model"]["decoder"]
    config = result.model.module.model.config
    assert decoder["num_hidden_layers"] == config.num_hidden_layers
    assert decoder["num_attention_heads"] == config.num_attention_heads
    assert decoder["num_key_value_heads"] == config.num_key_value_heads
    assert decoder["head_size"] == 16 and (exported.folder / "slimkit_prune.json").is_file()
