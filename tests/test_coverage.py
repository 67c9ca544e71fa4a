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
