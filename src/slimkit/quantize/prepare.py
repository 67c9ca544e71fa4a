"""The float ONNX model quantization starts from: the verified export of a torch model (or the
user's ONNX file, read only), with attention/LayerNorm/GELU fused by ONNX Runtime's transformer
optimizer for transformer encoders, so the quantized graph gets QAttention and fused kernels."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import DataError, VerificationError
from slimkit.model import Model
from slimkit.quantize.graph import check_finite_weights, load_proto

# Hugging Face model types ONNX Runtime's optimizer fuses as "bert"
BERT_LIKE = ("bert", "roberta", "distilbert", "xlm-roberta", "camembert", "electra", "mpnet")
FUSION_TOLERANCE = 1e-3


def float_onnx(model: Model, folder: Path, fuse: bool) -> tuple[Path, dict[str, Any]]:
    """Write the float ONNX model into ``folder``; return its path and what was done."""
    from slimkit.export.onnx import export_onnx

    info: dict[str, Any] = {}
    if model.module is not None:
        _check_finite_parameters(model)
        exported = export_onnx(model, folder / "float.onnx")
        path, info["export"] = exported.path, exported.to_dict()
    else:
        path = folder / "float.onnx"
        shutil.copyfile(str(model.onnx_path), path)  # the user's file is only read
    check_finite_weights(load_proto(path), model.source)  # before any run of the graph
    heads_hidden = _heads_and_hidden(model)
    if fuse and heads_hidden is not None:
        fused = folder / "float-fused.onnx"
        info["fusion"] = _fuse_transformer(path, fused, *heads_hidden)
        _check_same(model, path, fused)
        path = fused
    elif fuse:
        path, info["pre_process"] = _pre_process(model, path, folder / "float-pre.onnx")
    return path, info


def _pre_process(model: Model, src: Path, dst: Path) -> tuple[Path, str]:
    """ORT's quantization pre-processing (shape inference + graph optimisation, e.g. Conv+Relu
    fusion): without it, ORT cannot fuse many QDQ Conv patterns into QLinearConv (seen on
    ResNet-18: 7 of 20 convolutions fused without it, 20 of 20 with it)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from slimkit.io import scratch_cwd
    from slimkit.quantize.calibration import quiet

    with quiet(), scratch_cwd():  # ORT's shape inference drops debug files into the cwd
        for skip_symbolic in (False, True):  # symbolic inference fails on some graphs
            try:
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic)
                _check_same(model, src, dst)
                return dst, "applied" + (" (without symbolic shapes)" if skip_symbolic else "")
            except VerificationError:
                raise
            except Exception:  # noqa: BLE001 - any failure: quantize the graph as exported
                continue
    return src, "skipped: ONNX Runtime's pre-processing failed on this graph"


def _check_finite_parameters(model: Model) -> None:
    import torch

    module = model.require_module("quantization")
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(f"weight '{name}' of '{model.name}' holds NaN or Inf values; "
                            "quantization needs finite weights (check the training run)")


def fuses_transformer(model: Model) -> bool:
    """Whether :func:`float_onnx` fuses ``model`` as a transformer encoder (when asked to)."""
    return _heads_and_hidden(model) is not None


def _heads_and_hidden(model: Model) -> tuple[int, int] | None:
    heads, hidden = model.meta.get("num_attention_heads"), model.meta.get("hidden_size")
    if model.meta.get("hf_config") not in BERT_LIKE or not heads or not hidden:
        return None
    return int(heads), int(hidden)


def _fuse_transformer(src: Path, dst: Path, heads: int, hidden: int) -> dict[str, Any]:
    import logging

    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    # EmbedLayerNormalization takes float tables: unfused, the embedding Gathers get int8 rows
    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        optimized = optimize_model(str(src), model_type="bert", num_heads=heads,
                                   hidden_size=hidden, opt_level=0,
                                   optimization_options=options)
    finally:
        quiet.setLevel(level)
    optimized.save_model_to_file(str(dst))
    return {"fused_ops": {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}}


def _check_same(model: Model, reference: Path, candidate: Path) -> None:
    from slimkit.data import synthetic
    from slimkit.runtime import open_session

    batch = synthetic(model.inputs, 2, seed=3, dynamic=32).first_batch(2)
    with open_session(model.with_onnx(reference), "onnxruntime") as a, \
            open_session(model.with_onnx(candidate), "onnxruntime") as b:
        diff = float(np.max(np.abs(a.run(batch)[0] - b.run(batch)[0])))
    if diff > FUSION_TOLERANCE:
        raise VerificationError(f"ONNX Runtime's transformer fusion changed the outputs of "
                                f"'{model.name}' by {diff:.3g}; quantize with fuse off")
