"""The coverage suite (issue 15): models users bring, tiny and random, each through export,
dynamic int8, static int8 and structured pruning. A representative subset runs by default
(a text classifier, a causal LM, an image classifier, an RNN, a two-input model and a fused-qkv
rotary LM with tied embeddings); the full corpus (``slimkit.testing.corpus``, 45 models) is
marked slow. ``benchmarks/bench_coverage.py`` makes the table beside plain torch.onnx.export
and Torch-Pruning."""

from __future__ import annotations

import pytest
import torch

from slimkit.data import synthetic
from slimkit.export.onnx import export_onnx
from slimkit.model import Model
from slimkit.prune import PruneConfig, prune
from slimkit.quantize import QuantizeConfig, quantize
from slimkit.testing.corpus import FAST_HF, corpus_model, corpus_names
from slimkit.testing.graphs import FAST_GRAPHS

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore")]
pytest.importorskip("transformers")

HEADS = {"bert-seqcls": ("logits", (2, 3)), "llama": ("logits", (2, 16, 99)),
         "vit-imgcls": ("logits", (2, 4))}
STATIC_FAST = ("vit-imgcls", "image-and-table")  # static int8 in the default run


def params(model: Model) -> int:
    return sum(p.numel() for p in model.require_module("count").parameters())


def check_model(name: str, folder, static: bool) -> None:
    model = corpus_model(name, folder / name)
    batch = synthetic(model.inputs, 2, seed=0, dynamic=16).first_batch(2)
    if name in HEADS:  # the head is kept: its outputs, under their own name
        with torch.no_grad():
            out = model.module(*model.torch_args(batch))
        assert model.output_names == (HEADS[name][0],) and tuple(out.shape) == HEADS[name][1]
    exported = export_onnx(model, folder / "model.onnx")
    assert exported.max_abs_diff < 1e-4
    dynamic = quantize(model, folder / "dynamic.onnx", QuantizeConfig(mode="dynamic"),
                       measure=False)
    assert dynamic.sections["proof"]["ok"]
    assert dynamic.sections["metric"]["fidelity"]["sqnr_db"] >= 20.0
    if static:
        calib = synthetic(model.inputs, 16, seed=2, dynamic=16)
        quantized = quantize(model, folder / "static.onnx", QuantizeConfig(mode="static"),
                             calib=calib, measure=False)
        assert quantized.sections["metric"]["fidelity"]["sqnr_db"] >= 10.0
    pruned = prune(model, PruneConfig(ratio=0.5))
    assert params(pruned.model) <= 0.9 * params(model)
    assert export_onnx(pruned.model, folder / "pruned.onnx").max_abs_diff < 1e-4


@pytest.mark.parametrize("name", [*FAST_HF, *FAST_GRAPHS])
def test_a_representative_model(name, tmp_path):
    check_model(name, tmp_path, static=name in STATIC_FAST)


@pytest.mark.slow
@pytest.mark.parametrize("name", corpus_names())
def test_every_model_of_the_corpus(name, tmp_path):
    check_model(name, tmp_path, static=True)


def test_index_arithmetic_is_kept_float_and_quantizer_failures_are_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from slimkit.errors import ExportError
    from slimkit.quantize.guards import index_nodes, run_quantizer

    nodes = [helper.make_node("Log", ["x"], ["l"], name="log"),
             helper.make_node("Mul", ["l", "s"], ["m"], name="scale"),
             helper.make_node("Cast", ["m"], ["i"], name="to_int", to=TensorProto.INT64),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2]),
         helper.make_tensor_value_info("i", TensorProto.INT64, [2, 2])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 0.0, 0.0, 1.0])])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert sorted(index_nodes(path)) == ["log", "scale"]  # the MatMul is quantized

    def broken():
        raise ValueError("Unable to quantize node 'attn/MatMul_3': bad scale\nTraceback ...")

    with pytest.raises(ExportError, match=r"static quantizer failed on 'm' at node "
                                          r"'attn/MatMul_3' \(ValueError\); keep it in float "
                                          r"with --exclude name:attn/MatMul_3$"):
        run_quantizer(broken, "m", "static")
