"""Weight-only quantization of causal LMs to MatMulNBits (slimkit.llm.wquant): the grid equals
ONNX Runtime's bit for bit, the packed graph computes what the dequantized torch weights do,
GPTQ/AWQ/HQQ/GGUF each do what they promise on closed-form cases, and the verb writes a
verified folder (tiny random-init decoders) or nothing on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime_genai", reason="needs onnxruntime-genai (slimkit[llm])")

from slimkit.errors import DataError, InputError, VerificationError  # noqa: E402
from slimkit.llm.wquant import (  # noqa: E402  # noqa: E402
    AdvancedWeightQuantConfig,
    WeightQuantConfig,
    accuracy,
    gguf,
    grid,
    hqq,
    quantize_weights,
)
from slimkit.llm.wquant.awq import Grid  # noqa: E402
from slimkit.llm.wquant.gptq import gptq_quantize, output_error  # noqa: E402
from slimkit.llm.wquant.methods import Job, ort_rtn, rtn  # noqa: E402

FAST = AdvancedWeightQuantConfig(calibration_windows=4, calibration_window=64, awq_tokens=256,
                                 ppl_windows=2, ppl_window=64, speed_rounds=0, verify_tokens=16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from slimkit.llm.load import load_causal_lm
    from slimkit.testing.llm import tiny_llama_folder

    return load_causal_lm(tiny_llama_folder(tmp_path_factory.mktemp("wq")))


@pytest.fixture(scope="module")
def default_result(tiny, tmp_path_factory):
    return quantize_weights(tiny, tmp_path_factory.mktemp("out") / "q",
                            WeightQuantConfig(advanced=FAST))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_torch_grid_equals_onnx_runtime_rtn_bit_for_bit(bits, symmetric):
    w = torch.randn(24, 200) * 0.05  # 200: the last block of 64 is padded
    w[0, :64] = torch.arange(64) / 8.0 - 4.0  # exact half-step ties
    ours = grid.pack(grid.quantize_rtn(w, bits, 64, symmetric))
    theirs = grid.pack(ort_rtn(w, Grid(bits, 64, symmetric)))
    for a, b in zip(ours, theirs, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)


def test_dequantize_is_within_half_a_step():
    # ORT's symmetric grid maps the largest magnitude to -8 steps: the other side stops at +7,
    # so values beyond 7 steps saturate (by less than one step)
    w = torch.randn(16, 96)
    for symmetric in (True, False):
        q = grid.quantize_rtn(w, 4, 32, symmetric)
        step = q.scales.abs().repeat_interleave(32, dim=1)[:, :96]
        error = (q.dequantize() - w).abs()
        inside = (w.abs() <= 7 * step) if symmetric else torch.ones_like(w, dtype=torch.bool)
        assert (error[inside] <= step[inside] / 2 + 1e-6).all()
        assert (error <= step + 1e-6).all()


def _nbits_session(q, level):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from slimkit.llm.wquant.nbits import matmul_nbits

    node, inits = matmul_nbits(helper.make_node("MatMul", ["A", "W"], ["Y"], name="mm"), q, "W",
                               level)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", q.k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", q.n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("bits,block,symmetric", [(4, 32, True), (4, 128, False), (8, 64, True),
                                                  (8, 32, False)])
def test_matmulnbits_matches_the_dequantized_torch_weight(bits, block, symmetric):
    torch.manual_seed(0)
    w, a = torch.randn(40, 200) * 0.1, torch.randn(3, 200)  # K=200: a padded last block
    q = grid.quantize_rtn(w, bits, block, symmetric)
    reference = (a @ q.dequantize().T).numpy()
    exact = _nbits_session(q, 1).run(None, {"A": a.numpy()})[0]
    np.testing.assert_allclose(exact, reference, atol=1e-5, rtol=1e-5)
    int8_compute = _nbits_session(q, 4).run(None, {"A": a.numpy()})[0]
    assert 10 * np.log10((reference ** 2).sum() / ((int8_compute - reference) ** 2).sum()) > 30


def test_float_zero_points_run_in_matmulnbits():
    w = torch.randn(8, 64)
    q = hqq.hqq_quantize(w, 4, 32, float_zero=True)
    a = torch.randn(2, 64)
    out = _nbits_session(q, 1).run(None, {"A": a.numpy()})[0]
    np.testing.assert_allclose(out, (a @ q.dequantize().T).numpy(), atol=1e-4, rtol=1e-4)


def test_gptq_cuts_the_output_error_of_correlated_inputs():
    # two copies of each feature: the output depends on w_i + w_i', so GPTQ can push one
    # column's rounding error into its twin; round to nearest cannot
    torch.manual_seed(0)
    base = torch.randn(512, 32)
    x = torch.cat([base, base + 0.01 * torch.randn(512, 32)], dim=1)
    w = torch.randn(16, 64)
    h = x.T @ x
    g = gptq_quantize(w, h, 4, 32, True, act_order=False)
    r = grid.quantize_rtn(w, 4, 32, True)
    assert output_error(w, g, h) < 0.5 * output_error(w, r, h)
    ordered = gptq_quantize(w, h, 4, 32, True, act_order=True)  # static grids: less freedom
    assert output_error(w, ordered, h) < 0.6 * output_error(w, r, h)


def test_gptq_on_uncorrelated_inputs_is_round_to_nearest():
    w = torch.randn(8, 64)
    q = gptq_quantize(w, torch.eye(64) * 100.0, 4, 32, True, damp=1e-6)
    assert torch.equal(q.codes, grid.quantize_rtn(w, 4, 32, True).codes)


def test_hqq_zero_points_are_integer_codes_and_beat_min_max_in_l1():
    torch.manual_seed(0)
    w = torch.distributions.StudentT(2.0).sample((64, 256))  # heavy tails
    q = hqq.hqq_quantize(w, 4, 64)
    assert torch.equal(q.zero_points, q.zero_points.round())
    rtn_q = grid.quantize_rtn(w, 4, 64, False)
    assert (q.dequantize() - w).abs().mean() < (rtn_q.dequantize() - w).abs().mean()


def _q4_1_weights(rows=8, k=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(rows, k // 32, 1, generator=g) * 0.01 + 1e-3
    m = -torch.rand(rows, k // 32, 1, generator=g) * 15 * d  # blocks that span zero
    q = torch.randint(0, 16, (rows, k // 32, 32), generator=g).float()
    q[..., 0], q[..., 1] = 0, 15  # llama.cpp puts the min at 0 and the max at 15
    return (m + d * q).reshape(rows, k), d


def test_gguf_q4_1_is_exact_with_float_zero_points_and_within_half_a_step_without():
    w, d = _q4_1_weights()
    assert gguf.detect(w) == "q4_1"
    exact, note = gguf.encode_gguf(w, "layer", 4, float_zero=True)
    assert "exact" in note
    torch.testing.assert_close(exact.dequantize(), w, atol=1e-6, rtol=0)
    rounded, _ = gguf.encode_gguf(w, "layer", 4, float_zero=False)
    assert ((rounded.dequantize() - w).abs() <= d.repeat_interleave(32, 1).squeeze(-1)
            .reshape(8, 64) / 2 + 1e-6).all()
    eight, _ = gguf.encode_gguf(w, "layer", 8, float_zero=False)
    assert ((eight.dequantize() - w).abs() <= d.max() / 34 + 1e-6).all()


def test_gguf_q8_0_is_exact_in_8_bits_and_refused_in_4():
    d = torch.rand(4, 2, 1) * 0.01 + 1e-3
    q = torch.randint(-127, 128, (4, 2, 32)).float()
    q[..., 0] = 127
    w = (d * q).reshape(4, 64)
    assert gguf.detect(w) == "q8_0"
    encoded, _ = gguf.encode_gguf(w, "emb", 8, False)
    torch.testing.assert_close(encoded.dequantize(), w, atol=1e-7, rtol=1e-6)
    with pytest.raises(InputError, match="'emb' is stored as GGUF Q8_0"):
        gguf.encode_gguf(w, "emb", 4, False)


def test_gguf_refuses_weights_on_no_grid_naming_the_layer():
    with pytest.raises(InputError, match="'model.layers.0.mlp.up_proj' are not on a GGUF"):
        gguf.encode_gguf(torch.randn(4, 64), "model.layers.0.mlp.up_proj", 4, False)


@pytest.mark.parametrize("decode_ratio,prefill_ratio,expected", [
    (0.4, 0.8, 4),  # Zen 4 with VNNI: int8 activations faster in both phases
    (1.3, 1.1, 1),  # a CPU where level 4 is slower
    (0.9, 3.0, 1),  # faster decode but a much slower prefill outweighs 64 steps
])
def test_accuracy_level_is_picked_from_measured_ratios(decode_ratio, prefill_ratio, expected):
    times = {1: {"decode": 1e-4, "prefill": 1e-2},
             4: {"decode": 1e-4 * decode_ratio, "prefill": 1e-2 * prefill_ratio}}
    assert accuracy.pick_level(times, decode_steps=64) == expected


def test_awq_fold_keeps_the_float_model_exactly(tiny):
    from slimkit.llm.load import hf_module
    from slimkit.llm.wquant.awq import fold_scale, producer_of
    from slimkit.llm.wquant.passes import working_copy

    work = working_copy(hf_module(tiny))
    ids = torch.arange(20)[None] % 50 + 3
    before = work(input_ids=ids).logits
    layer = work.model.layers[0]
    torch.manual_seed(1)
    for names in (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                  ["self_attn.o_proj"], ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]):
        producer, tie = producer_of(layer, names)
        k = layer.get_submodule(names[0]).in_features
        s = torch.rand(k) + 0.5
        if tie is not None:
            s = (torch.rand(int(tie.max()) + 1) + 0.5)[tie]
        fold_scale(layer, names, producer, s, tie)
    torch.testing.assert_close(work(input_ids=ids).logits, before, atol=1e-4, rtol=1e-4)


def test_verb_writes_a_verified_folder_with_shared_tied_embeddings(default_result):
    report = default_result.report
    ops = report["op_types"]
    assert ops["MatMulNBits"] == 11 and ops["GatherBlockQuantized"] == 1  # 2x5 + head
    assert "MatMul" not in ops and "Gather" in ops  # only the mask's shape Gather stays
    assert report["tied_embeddings_shared"] and ops["Reshape"] >= 2
    assert report["graph_check"]["max_abs_logit_diff"] < 1e-3
    assert report["size"]["ratio"] > 3
    assert all(layer["bits"] == 4 and layer["sqnr_db"] > 15 for layer in report["layers"])
    assert report["lm_head"]["bits"] == 8 and report["quality"]["top1_agreement"] > 0.5
    saved = json.loads((default_result.folder / "slimkit_wquant.json").read_text())
    assert saved["config"]["method"] == "rtn" and saved["cpu"]["model"]


def test_quantized_folder_runs_unchanged_in_onnxruntime_genai(default_result):
    og = pytest.importorskip("onnxruntime_genai")
    from slimkit.llm.engine import Engine
    from slimkit.llm.runtime import open_runtime

    prompt = [5, 6, 7, 8]
    ours = Engine(open_runtime(default_result.model), stop_token_ids=()).run(prompt, 6).generated
    model = og.Model(str(default_result.folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + 6, do_sample=False, min_length=0)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(prompt, np.int32))
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert tokens == ours[:len(tokens)]


@pytest.mark.parametrize("kw", [
    {"method": "gptq", "block_size": 128, "lm_head": "int4"},  # 128 > hidden 64: padded
    {"method": "awq", "block_size": 64, "embeddings": "fp32"},
    {"method": "hqq", "mode": "int8", "lm_head": "fp32"},
])
def test_methods_write_folders_that_match_their_torch_reference(tiny, tmp_path, kw):
    result = quantize_weights(tiny, tmp_path / "q", WeightQuantConfig(advanced=FAST, **kw))
    report = result.report
    assert report["graph_check"]["max_abs_logit_diff"] < 1e-3
    assert not report["tied_embeddings_shared"]
    if kw["method"] == "gptq":
        assert all(layer["padded"] for layer in report["layers"] if "self_attn.q_proj" in
                   layer["names"][0])
        assert all(layer["output_error"] < 0.2 for layer in report["layers"])
    if kw["method"] == "awq":
        assert all(0 < layer["awq_error_ratio"] <= 1.0 for layer in report["layers"])


def test_keep_8bit_picks_the_most_sensitive_layers_by_measurement(tiny, tmp_path):
    config = WeightQuantConfig(keep_8bit=0.25, advanced=FAST)
    report = quantize_weights(tiny, tmp_path / "q", config).report
    mixed = report["mixed_precision"]
    errors = mixed["sensitivity"]
    chosen = set(mixed["eight_bit"])
    assert chosen and all(errors[c]["error"] >= max(errors[o]["error"] for o in errors
                                                      if o not in chosen) for c in chosen)
    bits = {layer["names"][0]: layer["bits"] for layer in report["layers"]}
    assert {n for n, b in bits.items() if b == 8} == chosen


def test_calibration_text_shorter_than_a_window_is_refused(tiny, tmp_path):
    text = tmp_path / "short.txt"
    text.write_text("Too short to calibrate on.")
    with pytest.raises(DataError, match="fewer than one window"):
        quantize_weights(tiny, tmp_path / "q", WeightQuantConfig(method="gptq", advanced=FAST),
                         calib=str(text))
    assert not (tmp_path / "q").exists()


def test_calibrating_on_the_evaluation_text_is_refused(tiny, tmp_path):
    with pytest.raises(InputError, match="evaluation part"):
        quantize_weights(tiny, tmp_path / "q", WeightQuantConfig(method="awq", advanced=FAST),
                         calib="builtin:python-reference")


def _scaled_rtn(factor, only=None):
    def quantizer(w, job):
        q = grid.quantize_rtn(w, job.grid.bits, job.grid.block, job.grid.symmetric)
        scale = factor if only in (None, job.name) else 1.0
        return grid.QuantizedWeight(q.codes, q.scales * scale, q.zero_points, q.bits, q.block,
                                    q.k), "broken"
    return quantizer


@pytest.mark.parametrize("factor,only,message", [
    (float("nan"), None, "quantizing 'model.embed_tokens' gives NaN"),  # named, before export
    (1e38, "lm_head", "NaN or infinite logits"),  # finite weights, overflowing logits
])
def test_nan_after_quantization_is_reported_and_nothing_written(tiny, tmp_path, monkeypatch,
                                                                 factor, only, message):
    from slimkit.llm.wquant import methods

    monkeypatch.setitem(methods.QUANTIZERS._items, "rtn", _scaled_rtn(factor, only))
    with pytest.raises(VerificationError, match=message):
        quantize_weights(tiny, tmp_path / "q", WeightQuantConfig(advanced=FAST))
    assert not (tmp_path / "q").exists()
    assert not list(tmp_path.glob(".slimkit-wq-*"))


@pytest.mark.parametrize("kw,message", [
    ({"block_size": 48}, "block_size 48"),
    ({"mode": "fp32"}, "int4 or int8"),
    ({"mode": "int8", "keep_8bit": 0.1}, "keep_8bit applies to int4"),
    ({"method": "hqq", "symmetric": True}, "asymmetric"),
    ({"method": "gguf", "block_size": 64}, "blocks of 32"),
    ({"method": "smoothquant"}, "method 'smoothquant' is not one of"),
    ({"accuracy_level": 7}, "accuracy_level"),
])
def test_bad_configs_are_one_line(kw, message):
    with pytest.raises(InputError, match=message):
        WeightQuantConfig(**kw)


def test_rtn_handler_is_onnx_runtimes_quantizer():
    w = torch.randn(8, 64)
    q, note = rtn(w, Job("x", Grid(4, 32, True), None, FAST))
    assert "ONNX Runtime" in note and torch.equal(q.codes, grid.quantize_rtn(w, 4, 32, True).codes)
