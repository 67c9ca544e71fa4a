"""The exact encoder-graph rewrites behind slimkit's int8 transformers (encoder_graph.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimkit.data import Dataset
from slimkit.errors import DataError
from slimkit.evaluate import sqnr_db
from slimkit.quantize.act_stats import channel_absmax, check_token_lengths
from slimkit.quantize.encoder_graph import (
    find_ffns,
    layernorm_outputs,
    smooth_layernorms,
    split_outlier_channels,
    unfuse_skip_layernorm,
)

D, H = 16, 64


def _post_ln_block(seed: int = 0) -> onnx.ModelProto:
    """SkipLN -> FFN (MatMul, bias, Gelu, MatMul) -> residual Add -> LayerNorm, with outlier
    channels in the first LayerNorm's gain (as in trained BERTs)."""
    rng = np.random.default_rng(seed)
    gain = np.ones(D, np.float32)
    gain[:2] = 40.0
    w1 = rng.standard_normal((D, H)).astype(np.float32) / 4
    w1[:, :3] *= 8.0  # a few hidden channels run large after the activation
    inits = {"g": gain, "b": rng.standard_normal(D).astype(np.float32),
             "w1": w1, "b1": rng.standard_normal(H).astype(np.float32),
             "w2": rng.standard_normal((H, D)).astype(np.float32) / 8,
             "g2": np.ones(D, np.float32), "b2": np.zeros(D, np.float32)}
    nodes = [
        helper.make_node("SkipLayerNormalization", ["x", "r", "g", "b"], ["y"], name="skip",
                         domain="com.microsoft", epsilon=1e-12),
        helper.make_node("MatMul", ["y", "w1"], ["h0"], name="ffn1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="ffn1_bias"),
        helper.make_node("Gelu", ["h1"], ["h"], name="gelu", domain="com.microsoft"),
        helper.make_node("MatMul", ["h", "w2"], ["f"], name="ffn2"),
        helper.make_node("Add", ["f", "y"], ["s"], name="residual"),
        helper.make_node("LayerNormalization", ["s", "g2", "b2"], ["out"], name="ln2", axis=-1,
                         epsilon=1e-12),
    ]
    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq", D])
            for n in ("x", "r")]
    graph = helper.make_graph(nodes, "block", spec,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)])


def _run(proto: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feed)[0]


def _feed(seed: int = 1, batch: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((batch, 12, D)).astype(np.float32) for k in ("x", "r")}


def _stats(proto: onnx.ModelProto, tensors: list[str], tmp_path) -> dict[str, np.ndarray]:
    path = tmp_path / "probe.onnx"
    onnx.save(proto, str(path))
    return channel_absmax(path, tensors, Dataset(_feed(seed=5, batch=8), None, "calib"),
                          ("x", "r"))


def test_unfused_skip_layernorm_is_exact_and_stays_unfused(tmp_path):
    proto = _post_ln_block()
    feed = _feed()
    reference = _run(proto, feed)
    assert unfuse_skip_layernorm(proto) == 2  # the SkipLayerNorm and the residual Add
    assert [n.op_type for n in proto.graph.node][:2] == ["Sum", "LayerNormalization"]
    np.testing.assert_allclose(_run(proto, feed), reference, rtol=1e-5, atol=1e-5)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    optimized = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert "SkipLayerNormalization" not in optimized  # ORT's session did not fuse it back


def test_smoothquant_in_a_post_ln_block_is_exact_with_a_residual_mul(tmp_path):
    proto = _post_ln_block()
    unfuse_skip_layernorm(proto)
    feed = _feed()
    reference = _run(proto, feed)
    tensors = layernorm_outputs(proto)
    assert tensors == ["y"]  # ln2 feeds no weight layer
    done = smooth_layernorms(proto, _stats(proto, tensors, tmp_path), alpha=0.5)
    assert done == ["y"]
    muls = [n for n in proto.graph.node if n.op_type == "Mul"]
    assert len(muls) == 1 and muls[0].input[0] == "y"  # the residual reads y * s
    np.testing.assert_allclose(_run(proto, feed), reference, rtol=1e-4, atol=1e-4)
    gain = numpy_helper.to_array(next(i for i in proto.graph.initializer
                                      if i.name == proto.graph.node[1].input[1]))
    assert gain[:2].max() < 20.0  # the outlier channels' gain shrank


def test_outlier_split_is_exact_and_lowers_dynamic_int8_error(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = _post_ln_block()
    unfuse_skip_layernorm(proto)
    feed = _feed()
    reference = _run(proto, feed)
    assert len(find_ffns(proto)) == 1
    plain = onnx.ModelProto()
    plain.CopyFrom(proto)
    assert split_outlier_channels(proto, _stats(proto, ["h"], tmp_path), k=4) == ["h"]
    assert "Split" in {n.op_type for n in proto.graph.node}
    np.testing.assert_allclose(_run(proto, feed), reference, rtol=1e-4, atol=1e-4)
    errors = {}
    for name, graph in (("plain", plain), ("split", proto)):
        onnx.save(graph, str(tmp_path / f"{name}.onnx"))
        quantize_dynamic(tmp_path / f"{name}.onnx", tmp_path / f"{name}-q.onnx",
                         per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"],
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
        errors[name] = sqnr_db(reference, _run(onnx.load(str(tmp_path / f"{name}-q.onnx")),
                                               feed))
    assert errors["split"] > errors["plain"] + 1.0  # dB


def test_calibration_text_shorter_than_four_tokens_is_refused():
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    short = Dataset({"input_ids": np.ones((2, 4), np.int64), "attention_mask": mask}, None,
                    "short.txt")
    with pytest.raises(DataError, match="shorter than 4 tokens"):
        check_token_lengths(short, ("input_ids", "attention_mask"))
    mask[0] = 1
    check_token_lengths(short, ("input_ids", "attention_mask"))  # one long one is enough


def test_outlier_split_follows_an_exported_erf_gelu_chain(tmp_path):
    """The TorchScript export writes GELU as Div/Erf/Add/Mul with Constant-node scalars and the
    FFN bias as an Add; the whole chain is permuted and the float function kept."""
    rng = np.random.default_rng(0)

    def const(name: str, value: float) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name],
                                value=numpy_helper.from_array(np.array(value, np.float32)))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m"]),
        helper.make_node("Add", ["b1", "m"], ["a"]),
        const("c_sqrt2", 1.4142135), const("c_one", 1.0), const("c_half", 0.5),
        helper.make_node("Div", ["a", "c_sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "c_one"], ["e1"]),
        helper.make_node("Mul", ["a", "e1"], ["g0"]),
        helper.make_node("Mul", ["g0", "c_half"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["out"]),
    ]
    w1 = rng.standard_normal((D, H)).astype(np.float32)
    w1[:, 5] *= 20.0
    inits = [numpy_helper.from_array(w1, "w1"),
             numpy_helper.from_array(rng.standard_normal(H).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((H, D)).astype(np.float32), "w2")]
    graph = helper.make_graph(
        nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", D])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feed = {"x": np.random.default_rng(1).standard_normal((2, 5, D)).astype(np.float32)}
    reference = _run(proto, feed)
    ffns = find_ffns(proto)
    assert len(ffns) == 1 and ffns[0].hidden == "h" and len(ffns[0].vectors) == 1
    path = tmp_path / "ffn.onnx"
    onnx.save(proto, str(path))
    stats = channel_absmax(path, ["h"], Dataset(feed, None, "calib"), ("x",))
    assert split_outlier_channels(proto, stats, k=2) == ["h"]
    np.testing.assert_allclose(_run(proto, feed), reference, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_minilm_default_int8_is_small_integer_and_faithful_on_held_out_text(tmp_path):
    """The issue-19 path end to end on the real model (speed is the benchmark's business)."""
    import pydoc_data.topics as topics
    import random
    import re

    from slimkit import load_model
    from slimkit.evaluate import embedding_fidelity, predict
    from slimkit.quantize import QuantizeConfig, quantize

    model = load_model("builtin:minilm")
    text = re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", " ".join(topics.topics.values())))
    text = [t for t in text if 40 < len(t) < 200 and t[0].isupper()]
    random.Random(0).shuffle(text)

    def encode(lines: list[str]) -> Dataset:
        enc = model.tokenizer(lines, padding="longest", truncation=True, max_length=128,
                              return_tensors="np")
        return Dataset({k: np.asarray(v, np.int64) for k, v in enc.items()}, None, "text")
    calib, held_out = encode(text[:64]), encode(text[64:164])
    result = quantize(model, tmp_path / "q.onnx", QuantizeConfig(), calib=calib,
                      measure=False)
    assert result.sections["proof"]["ok"] and "QAttention" in result.sections["proof"][
        "op_counts"]
    assert result.path.stat().st_size < 23_000_000  # ORT's quantize_dynamic: 22.96 MB
    reference = predict(model, held_out, "onnxruntime", batch_size=1)
    got = predict(model.with_onnx(result.path), held_out, "onnxruntime", batch_size=1)
    fid = embedding_fidelity(reference, got)
    assert fid["cosine_mean"] >= 0.995 and fid["top5_neighbour_agreement"] >= 0.93
