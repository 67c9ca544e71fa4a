"""W8A8 for causal LMs: SmoothQuant folded exactly, the per-token int8 graph's arithmetic and
kernels, the verb's verified folder (slimkit's engine and onnxruntime-genai), and bad input.
Tiny random-init decoders; SmolLM2 in tests/test_llm_w8a8_smollm2.py (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime_genai", reason="W8A8 folders need onnxruntime-genai's builder "
                    "(pip install 'slimkit[llm]')")

from slimkit.errors import DataError, InputError, OutputPathError, VerificationError  # noqa: E402
from slimkit.llm.evaluate import PerplexityConfig  # noqa: E402
from slimkit.llm.load import load_causal_lm  # noqa: E402
from slimkit.llm.w8a8 import calibrate, qmath, sites  # noqa: E402
from slimkit.llm.w8a8.api import quantize_w8a8  # noqa: E402
from slimkit.llm.w8a8.config import AdvancedW8A8, W8A8Config  # noqa: E402
from slimkit.testing.llm import ARCHITECTURES, tiny_causal_lm, tiny_llama_folder  # noqa: E402

SMALL = AdvancedW8A8(calibration_tokens=256, calibration_window=64, search_tokens=64)
EVAL = PerplexityConfig(window=64, stride=64, max_tokens=256)


def small_config(**fields):
    return W8A8Config(evaluation=EVAL, speed=None, advanced=SMALL, **fields)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("w8a8")
    return root, load_causal_lm(tiny_llama_folder(root))


@pytest.fixture(scope="module")
def made(tiny):
    root, model = tiny
    return quantize_w8a8(model, root / "w8a8", small_config(), threads=1)


# ---- the arithmetic ------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=2, max_size=40))
def test_fake_quant_is_within_half_a_step(values):
    x = torch.tensor([values])
    step_token = x.abs().max() / 127
    assert (qmath.fake_quant_tokens(x) - x).abs().max() <= step_token / 2 + 1e-6 * step_token
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    step = (hi - lo) / 255
    assert (qmath.fake_quant_u8(x) - x).abs().max() <= step + 1e-5 * max(step, 1e-12)


def test_weight_rows_and_smoothing_scales_closed_forms():
    w = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    q = qmath.fake_quant_s8_rows(w)
    torch.testing.assert_close(q[0], torch.tensor([2.0, -1.0 * 64 / 63.5, 0.5 * 32 / 31.75]),
                               rtol=1e-6, atol=0)
    assert q[1].abs().sum() == 0
    s = qmath.smoothing_scales(torch.tensor([9.0, 1.0]), torch.tensor([1.0, 4.0]), 0.5)
    torch.testing.assert_close(s, torch.tensor([3.0, 0.5]), rtol=1e-6, atol=0)


def test_choose_modes():
    errors = {"a": calibrate.SiteErrors((None, 0.5, 0.8), np.array([3.0, 1.0, 2.0]), 1.0),
              "b": calibrate.SiteErrors((None, 0.5, 0.8), np.array([5.0, 4.0, 0.5]), 10.0)}
    assert calibrate.choose(errors, "per-layer") == {"a": 0.5, "b": 0.8}
    assert calibrate.choose(errors, "global") == {"a": 0.5, "b": 0.5}  # 1.0+0.4 < 2.0+0.05
    assert calibrate.choose(errors, "fixed", 0.3) == {"a": 0.3, "b": 0.3}
    assert calibrate.choose(errors, "off") == {"a": None, "b": None}


# ---- smoothing is exact --------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_folding_keeps_the_float_function(arch):
    hf = tiny_causal_lm(arch, seed=1)
    ids = torch.randint(3, 300, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = hf(input_ids=ids).logits
        found = sites.decoder_sites(hf)
        assert {s.kind for s in found} == set(sites.KINDS)
        gen = torch.Generator().manual_seed(2)
        for site in found:  # strong, uneven scales: anything misplaced shows
            n = sites.source_channels(hf, site)
            sites.fold(hf, site, torch.exp(torch.randn(n, generator=gen)))
        after = hf(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * float(before.abs().max()))


def test_gqa_groups_share_the_value_heads_scale():
    hf = tiny_causal_lm("llama")  # 4 query heads, 2 kv heads of 16
    site = next(s for s in sites.decoder_sites(hf) if s.kind == "attn_out")
    assert site.repeat == 2 and site.head_dim == 16
    wide = site.expand(torch.arange(32.0))
    assert wide.shape == (64,) and torch.equal(wide[:16], wide[16:32])
    assert torch.equal(site.pool(wide), torch.arange(32.0))


def test_unknown_layout_is_one_line():
    hf = tiny_causal_lm("llama")
    hf.config.model_type = "gpt_neox"
    with pytest.raises(InputError, match="layout of model type 'gpt_neox'"):
        sites.decoder_sites(hf)


# ---- the verb's folder ---------------------------------------------------------------------

def test_int8_graph_runs_integer_kernels(made):
    graph = made.report["graph"]
    assert graph["integer_kernels"] == {"int8_layers": 10, "integer_kernels_in_optimised_graph":
                                        10, "kernel": ["MatMulIntegerToFloat"],
                                        "lm_head_kernel": "MatMulNBits"}
    assert graph["layers"]["kept_float"] == []
    assert "MatMul" not in graph["optimized_op_types"]  # no float MatMul left
    assert graph["optimized_op_types"]["MatMulNBits"] == 1  # the head, weight-only int8
    assert graph["layers"]["activation_quantizations"] == 8  # gate and up share one


def test_smoothing_is_reported_exact_and_per_site(made):
    smoothing = made.report["smoothing"]
    assert smoothing["exactness"]["max_logit_diff_relative"] <= 1e-5
    assert len(smoothing["sites"]) == 8 and smoothing["mode"] == "per-layer"
    for site in smoothing["sites"]:
        if site["alpha"] is not None:  # the chosen alpha never emulates worse than none
            assert site["error_smoothed"] <= site["error_unsmoothed"]


def test_w8a8_stays_close_to_fp32(made):
    fidelity = made.report["fidelity"]
    assert fidelity["kl_mean"] < 0.02 and fidelity["top1_agreement"] > 0.85
    assert abs(fidelity["perplexity_change"]) < 0.03
    assert (made.folder / "slimkit_w8a8.json").is_file()


def test_ort_graph_matches_the_torch_emulation(made, tiny):
    """The ONNX int8 graph computes what qmath emulates: the search optimises the real thing."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    proto = onnx.load(str(made.folder / "model.onnx"))
    node = next(n for n in proto.graph.node if n.name.endswith("down_proj/MatMulInteger"))
    x_name = next(n for n in proto.graph.node if n.output[0] == node.input[0]).input[0]
    x_name = next(n for n in proto.graph.node if n.output[0] == x_name).input[0]  # Div's x
    out = next(n for n in proto.graph.node if n.name.endswith("down_proj/Dequantize")).output[0]
    proto.graph.output.extend([helper.make_tensor_value_info(x_name, onnx.TensorProto.FLOAT, None),
                               helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros((1, 2, 0, 16), np.float32)  # kv heads 2 of 16, empty cache
             for i in proto.graph.input if "past" in i.name}
    ids = np.arange(5, 25, dtype=np.int64)[None]
    x, y = session.run([x_name, out], {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                       **feeds})
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    wq = inits[node.input[1]].astype(np.float32)
    ws = next(v for k, v in inits.items() if k.endswith("down_proj.MatMul.weight.scale"))
    xq = qmath.fake_quant_tokens(torch.from_numpy(x[0])).numpy()
    np.testing.assert_allclose(y[0], xq @ (wq * ws), rtol=1e-4, atol=1e-4 * np.abs(y).max())


def test_folder_generates_in_slimkit_and_onnxruntime_genai(made):
    import onnxruntime_genai as og

    from slimkit.llm.engine import Engine
    from slimkit.llm.runtime import open_runtime

    ours = Engine(open_runtime(made.model), stop_token_ids=()).run([5, 6, 7, 8], 6).generated
    genai = og.Model(str(made.folder))
    params = og.GeneratorParams(genai)
    params.set_search_options(max_length=10, min_length=10, do_sample=False)
    generator = og.Generator(genai, params)
    generator.append_tokens(np.array([5, 6, 7, 8], np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    theirs = [int(t) for t in generator.get_sequence(0)[4:]]
    same = ours[:ours.index(2)] if 2 in ours else ours  # GenAI's min_length masks EOS (2)
    assert len(same) >= 2 and theirs[:len(same)] == same


def test_int8_kv_cache_and_per_tensor_mode(tiny):
    root, model = tiny
    kv = quantize_w8a8(model, root / "kv", small_config(kv_cache="int8"), threads=1)
    assert kv.report["graph"]["kv_cache"]["dtype"] == "int8"
    genai = json.loads((kv.folder / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["num_hidden_layers"] == 2
    assert kv.report["fidelity"]["kl_mean"] < 0.05
    tensor = quantize_w8a8(model, root / "tensor", small_config(activations="tensor",
                                                                  smoothing="global"), threads=1)
    kernels = tensor.report["graph"]["integer_kernels"]["kernel"]
    assert "DynamicQuantizeMatMul" in kernels  # gate and up share one DynamicQuantizeLinear


# ---- bad input -----------------------------------------------------------------------------

def test_calibration_text_shorter_than_a_window(tiny, tmp_path):
    _, model = tiny
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.", encoding="utf-8")
    with pytest.raises(DataError, match="fewer than one window of 64"):
        quantize_w8a8(model, tmp_path / "out", small_config(), calib=str(short), threads=1)
    assert not (tmp_path / "out").exists()


def test_evaluation_text_is_refused_for_calibration(tiny, tmp_path):
    _, model = tiny
    with pytest.raises(InputError, match="is the evaluation text"):
        quantize_w8a8(model, tmp_path / "out", small_config(),
                      calib="builtin:python-reference:evaluation", threads=1)


def test_nan_logits_are_detected_and_nothing_is_written(tiny, tmp_path, monkeypatch):
    from slimkit.llm.w8a8 import onnx_int8

    _, model = tiny
    real = onnx_int8.quantize_weight

    def broken(w, qmax):
        q, s = real(w, qmax)
        return q, np.full_like(s, np.nan)

    monkeypatch.setattr(onnx_int8, "quantize_weight", broken)
    with pytest.raises(VerificationError, match="NaN or infinite logits.*nothing was written"):
        quantize_w8a8(model, tmp_path / "out", small_config(), threads=1)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".slimkit")]


def test_a_budget_the_original_misses_is_refused(tiny, tmp_path):
    _, model = tiny
    with pytest.raises(InputError, match="already above max_perplexity 5"):
        quantize_w8a8(model, tmp_path / "out", small_config(max_perplexity=5.0), threads=1)
    assert not (tmp_path / "out").exists()


def test_bad_config_and_output(tiny, tmp_path):
    _, model = tiny
    with pytest.raises(InputError, match="alpha must be in"):
        W8A8Config(alpha=1.5)
    with pytest.raises(InputError, match="smoothing 'sometimes' is not one of"):
        W8A8Config(smoothing="sometimes")
    with pytest.raises(InputError, match="calibration part"):
        W8A8Config(evaluation=PerplexityConfig(text="builtin:python-reference:calibration"))
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(OutputPathError, match="not an empty folder"):
        quantize_w8a8(model, taken, small_config(), threads=1)


# ---- the command line ----------------------------------------------------------------------

def test_cli_quantize_w8a8(tiny, tmp_path, capsys):
    from slimkit.cli import main

    root, _ = tiny
    argv = ["quantize", str(root / "tiny-llama"), "--mode", "w8a8", "-o", str(tmp_path / "q"),
            "--eval-tokens", "128", "--no-speed", "--smoothing", "global", "--json",
            "--keep-float", "name:layers.0.mlp.down_proj", "--lm-head", "fp32"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["smoothing"] == "global"
    assert report["graph"]["layers"]["kept_float"] == ["layers.0.mlp.down_proj", "lm_head"]
    assert report["graph"]["lm_head"]["precision"] == "float"
    assert (tmp_path / "q" / "slimkit_w8a8.json").is_file()
    assert main(["quantize", "builtin:digits-mlp", "--mode", "w8a8", "-o",
                 str(tmp_path / "x")]) == 2
    assert "is for causal LMs" in capsys.readouterr().err


def test_a_missed_budget_keeps_the_most_sensitive_layers_float(tiny, tmp_path):
    _, model = tiny
    result = quantize_w8a8(model, tmp_path / "out", small_config(max_ppl_increase=1e-9),
                           threads=1)
    steps = result.report["budget"]["steps"]
    assert steps[0]["met"] is False and not steps[0]["kept_float"] and len(steps) > 1
    kept = [len(step["kept_float"]) for step in steps]
    assert kept == sorted(kept) and result.met_budget is steps[-1]["met"]
    written = result.report["graph"]["layers"]["kept_float"]
    assert set(written) == set(steps[-1]["kept_float"])  # the last attempt is what is written
    assert (tmp_path / "out" / "model.onnx").is_file()
