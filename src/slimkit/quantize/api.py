"""``slimkit.quantize``: float ONNX -> preflight -> quantize -> prove integer kernels -> verify
fidelity and the metric -> (revert layers until the drop fits the budget) -> measure speed
against float in the same run -> write the model atomically, with a report of every step."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slimkit.data import Dataset, synthetic
from slimkit.errors import InputError
from slimkit.evaluate.metrics import UserMetric
from slimkit.io import atomic_path, check_output_path
from slimkit.model import Model
from slimkit.quantize.calibration import check_calibration
from slimkit.quantize.config import Equalize, QuantizeConfig, QuantMode
from slimkit.quantize.graph import load_proto, prove_integer_kernels, quantizable_layers
from slimkit.quantize.methods import METHODS, QuantJob
from slimkit.quantize.prepare import fuses_transformer
from slimkit.quantize.scoring import Score, Scorer
from slimkit.selector import Selector

INT8_MODES = (QuantMode.DYNAMIC, QuantMode.STATIC, QuantMode.QAT)
CALIBRATED = (QuantMode.STATIC, QuantMode.QAT)
DIAGNOSIS_EXAMPLES = 64


@dataclass
class QuantizeResult:
    path: Path
    model: Model  # a handle on the quantized ONNX file
    sections: dict[str, Any] = field(default_factory=dict)
    met_budget: bool | None = None  # None when no max_drop was asked for

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "met_budget": self.met_budget, **self.sections}


def quantize(model: Model, output: str | Path, config: QuantizeConfig | None = None,
             calib: Dataset | None = None, eval_data: Dataset | None = None,
             metric: UserMetric | None = None, threads: int = 1,
             measure: bool = True) -> QuantizeResult:
    """Quantize ``model`` to an ONNX file at ``output``, verified and measured.

    Args:
        model: a torch model (exported and verified first) or an ONNX model.
        output: the ``.onnx`` file to write (atomically; its folder must exist).
        config: mode, calibration, exclusions, accuracy budget.
        calib: calibration data (static mode).
        eval_data: data to verify on (labels give accuracy); ``calib`` by default.
        metric: a user metric ``(outputs, labels) -> float``, higher is better.
        threads: threads for the speed measurement.
        measure: benchmark float vs quantized (turn off only in tests).

    Example:
        >>> import tempfile, pathlib
        >>> from slimkit import load_model, load_data
        >>> m = load_model("builtin:digits-mlp")
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "q.onnx"
        >>> r = quantize(m, out, QuantizeConfig(mode="dynamic"), measure=False,
        ...              eval_data=load_data("builtin:digits:test", m))
        >>> r.sections["proof"]["ok"], r.sections["metric"]["drop"] < 0.02
        (True, True)
    """
    from slimkit.quantize.preflight import choose_activation_type, gemm_ratios, run_preflight

    config = config or QuantizeConfig()
    if not str(output).endswith(".onnx"):
        raise InputError(f"quantized model path '{output}' must end with .onnx")
    inputs = (model.onnx_path,) if model.onnx_path else ()
    check_output_path(output, inputs=inputs)
    train = calib
    if config.mode in CALIBRATED:  # fail on bad calibration data before any work
        calib = check_calibration(calib, model.inputs, config.calibration_size)
    sections: dict[str, Any] = {"config": config.to_dict()}
    with tempfile.TemporaryDirectory(prefix="slimkit-quant-") as tmp_name:
        tmp = Path(tmp_name)
        source_model = model
        encoder = config.mode in INT8_MODES and config.fuse_transformer and \
            fuses_transformer(model)  # SmoothQuant then goes into the fused graph, exactly
        if config.smooth_alpha is not None and config.mode in INT8_MODES and \
                _has_layernorm(model) and not encoder:
            from slimkit.quantize.smooth import smooth_quant

            observe = calib or eval_data or synthetic(model.inputs, 16, seed=0)
            source_model, sections["smooth_quant"] = smooth_quant(model, observe,
                                                                  config.smooth_alpha)
        float_path, sections["prepare"] = _float_model(source_model, tmp, config)
        if encoder:
            from slimkit.quantize.encoder import rewrite_float_encoder

            float_path, sections["encoder_rewrite"] = rewrite_float_encoder(
                model, float_path, config, calib or eval_data)
        float_model = replace(model.with_onnx(float_path), name=f"{model.name}-fp32")
        source = float_path
        if config.mode == QuantMode.STATIC and calib is not None:
            source, sections["equalization"] = _equalized(source_model, calib, config, tmp,
                                                          float_path)
        layers = quantizable_layers(load_proto(source))
        if not layers and config.mode != QuantMode.FP16:
            raise InputError(f"'{model.name}' has no quantizable layers (MatMul, Gemm, Conv "
                             "with constant weights)")
        excluded = Selector(config.exclude).select(layers)
        sections["preflight"] = run_preflight(float_path, config, model.inputs, threads).to_dict()
        data = eval_data or calib or synthetic(model.inputs, 16, seed=0)
        scorer = Scorer(model, float_model, data, metric)
        overrides = None
        if config.mode == QuantMode.QAT and train is not None:
            source, overrides, sections["qat"] = _qat(source_model, train, config, tmp)
        job = QuantJob(source, tmp / "quant.onnx", config, model.input_names,
                       tuple(layer.name for layer in excluded),
                       choose_activation_type(config.activation_type, ratios=gemm_ratios()),
                       calib,
                       calibration_cache=tmp / "calibration.json", range_overrides=overrides)
        from slimkit.quantize.guards import run_quantizer

        sections["method"] = run_quantizer(lambda: METHODS.get(config.mode.value)(job),
                                           model.name, config.mode.value)
        score = scorer.score(job.out_path)
        if sections.get("equalization", {}).get("applied") and \
                config.equalize == Equalize.AUTO:
            job, score = _keep_better(job, score, float_path, scorer, sections["equalization"])
        met_budget = None
        if config.max_drop is not None:
            from slimkit.quantize.accuracy import revert_until_within_budget

            job, score, sections["accuracy_aware"], met_budget = revert_until_within_budget(
                job, layers, scorer, score, config)
        sections["metric"] = score.to_dict()
        sections["kept_float"] = _kept_float(layers, job, sections.get("accuracy_aware"))
        if config.mode in INT8_MODES:
            sections["proof"] = prove_integer_kernels(job.out_path, threads).to_dict()
            sections["diagnosis"] = _diagnosis(job, layers, data, sections)
        quant_model = replace(model.with_onnx(job.out_path),
                              name=f"{model.name}-{config.mode.value}")
        if measure:
            sections["latency"] = _measure(float_model, quant_model, threads)
            sections["verdict"] = _verdict(sections)
        with atomic_path(output, inputs=inputs) as final_tmp:
            shutil.copyfile(job.out_path, final_tmp)
    final = Path(output)
    sections["size"] = {"float_bytes": sections["prepare"]["float_bytes"],
                        "quantized_bytes": final.stat().st_size}
    return QuantizeResult(final, model.with_onnx(final), sections, met_budget)


def _float_model(model: Model, tmp: Path, config: QuantizeConfig) -> tuple[Path, dict[str, Any]]:
    from slimkit.quantize.prepare import float_onnx

    # fp16 and int4 keep the plain graph: the fused contrib ops are float32-only on CPU
    fuse = config.fuse_transformer and config.mode in INT8_MODES
    path, info = float_onnx(model, tmp, fuse)
    info["float_bytes"] = path.stat().st_size
    return path, info


def _equalized(model: Model, calib: Dataset, config: QuantizeConfig, tmp: Path,
               plain: Path) -> tuple[Path, dict[str, Any]]:
    """The float ONNX file to quantize from: equalized and bias-corrected when asked (or, in
    auto mode, when the model has depthwise convolution pairs); else ``plain``."""
    from slimkit.quantize.equalize import equalize, has_depthwise_pair

    if model.module is None:
        return plain, {"applied": False, "why": "an ONNX model: equalization needs torch"}
    if config.equalize == Equalize.OFF:
        return plain, {"applied": False, "why": "turned off"}
    if config.equalize == Equalize.AUTO and not has_depthwise_pair(model.module):
        return plain, {"applied": False, "why": "no depthwise convolution pair to equalize"}
    eq_model, info = equalize(model, calib, per_channel=config.per_channel)
    (tmp / "equalized").mkdir()
    path, _ = _float_model(eq_model, tmp / "equalized", config)
    return path, {"applied": True, **info}


def _keep_better(job: QuantJob, score: Score, plain: Path, scorer: Scorer,
                 info: dict[str, Any]) -> tuple[QuantJob, Score]:
    """Auto mode: quantize the plain float model too and keep whichever scores better. (Layers
    that an accuracy budget later reverts to float come from the kept model's float graph.)"""
    other = replace(job, float_path=plain, out_path=job.out_path.with_name("quant-plain.onnx"),
                    calibration_cache=None)
    METHODS.get(job.config.mode.value)(other)
    plain_score = scorer.score(other.out_path)

    def key(s: Score) -> tuple[float, float]:
        sqnr = s.fidelity.get("sqnr_db", 0.0)
        # without labels, top-1 agreement on a few examples is coarse: SQNR decides first
        return (sqnr, s.value) if scorer.name == "top1_agreement" else (round(s.value, 6), sqnr)

    info["metric_with"], info["metric_without"] = score.value, plain_score.value
    info["sqnr_with"] = score.fidelity.get("sqnr_db")
    info["sqnr_without"] = plain_score.fidelity.get("sqnr_db")
    if key(plain_score) > key(score):
        info["applied"], info["why"] = False, "tried; the plain model quantized better"
        return other, plain_score
    return job, score


def _diagnosis(job: QuantJob, layers: list[Any], data: Dataset,
               sections: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-layer SQNR and outlier channels (reused from the accuracy-aware step when it ran)."""
    from slimkit.quantize.diagnose import layer_errors

    aware = sections.get("accuracy_aware", {})
    if "layer_errors" in aware:
        return list(aware["layer_errors"])
    errors = layer_errors(job.float_path, job.out_path, layers, data.take(DIAGNOSIS_EXAMPLES),
                          job.input_names)
    return [e.to_dict() for e in errors]


def _has_layernorm(model: Model) -> bool:
    import torch

    return model.module is not None and any(
        isinstance(m, torch.nn.LayerNorm) for m in model.module.modules())


def _qat(model: Model, train: Dataset, config: QuantizeConfig,
         tmp: Path) -> tuple[Path, dict[str, tuple[float, float]], dict[str, Any]]:
    """Fine-tune with fake quantization, export the result, and map each layer's learned input
    range onto the ONNX tensor that feeds it."""
    from slimkit.quantize.qat import qat_finetune
    from slimkit.selector import module_path_of_onnx_node

    trained = qat_finetune(model, train, config.qat_epochs, config.qat_lr, config.learn_scales)
    (tmp / "qat").mkdir()
    path, _ = _float_model(trained.model, tmp / "qat", config)
    overrides = {}
    for node in load_proto(path).graph.node:
        rng = trained.ranges.get(module_path_of_onnx_node(node.name))
        if rng is not None and node.op_type in ("Conv", "Gemm", "MatMul"):
            overrides[node.input[0]] = rng
    section = {"epochs": config.qat_epochs, "lr": config.qat_lr,
               "learned_scales": config.learn_scales, "batchnorm_folded_into": trained.folded,
               "first_loss": trained.losses[0] if trained.losses else None,
               "last_loss": trained.losses[-1] if trained.losses else None,
               "ranges_applied": len(overrides)}
    return path, overrides, section


def _kept_float(layers: list[Any], job: QuantJob, aware: dict[str, Any] | None) -> list[dict]:
    reverted = set(aware.get("reverted", [])) if aware else set()
    return [{"layer": name, "why": "reverted: accuracy budget" if name in reverted
             else "excluded by rule"} for name in job.exclude_nodes]


def _measure(float_model: Model, quant_model: Model, threads: int) -> list[dict[str, Any]]:
    from dataclasses import asdict

    from slimkit.bench.core import BenchConfig, benchmark

    result = benchmark([float_model, quant_model], BenchConfig(
        runtimes=("onnxruntime",), threads=(threads,), batches=(1,), rounds=5,
        round_seconds=0.2))
    return [asdict(row) for row in result.rows]


def _verdict(sections: dict[str, Any]) -> dict[str, Any]:
    rows = sections["latency"]
    speedup = rows[-1]["speedup"]
    pre = sections["preflight"]
    verdict = {"measured_speedup": round(speedup, 3), "expected_speedup": pre["expected_speedup"],
               "faster": speedup > 1.0}
    if speedup <= 1.0:
        verdict["why"] = ("the quantized model is not faster than float here: "
                          + "; ".join(pre["reasons"]))
    proof = sections.get("proof")
    if proof is not None and not proof["ok"]:
        verdict["kernels"] = ("ONNX Runtime left quantized layers as float ops between Q/DQ "
                              f"pairs: {proof['unfused_qdq'][:5]}")
    return verdict
