"""The techniques the advisor (``slimkit.advise.api``) assesses: each predicts its speed-up from the
measurements and, for ``--verify``, runs a quick trial through slimkit's own verbs and measures
it side by side with its float baseline. A technique is registered in ``TECHNIQUES``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slimkit.advise.config import AdviseConfig, Measurements, Recommendation, amdahl
from slimkit.errors import SlimkitError
from slimkit.model import Model
from slimkit.registry import Registry

MAC_OPS = ("Conv", "FusedConv", "NchwcConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm",
           "Attention")
PAYS = 1.10


@dataclass
class Trial:
    """What a technique's prediction leaves for its trial (e.g. the pruned model)."""

    model: Model
    config: AdviseConfig
    folder: Path
    state: dict[str, Any] = field(default_factory=dict)

    def workdir(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder


class Technique(Protocol):
    def predict(self, model: Model, m: Measurements, trial: Trial) -> Recommendation: ...

    def verify(self, rec: Recommendation, trial: Trial) -> None: ...


TECHNIQUES: Registry[Technique] = Registry("technique")


def _share(m: Measurements, ops: tuple[str, ...]) -> float:
    return sum(share for op, share in m.latency_by_op.items() if op in ops)


def _finish(rec: Recommendation) -> Recommendation:
    rec.pays = rec.predicted_speedup is not None and rec.predicted_speedup >= PAYS
    return rec


def _synthetic(trial: Trial, n: int) -> Any:
    from slimkit.data import synthetic

    cfg = trial.config
    return synthetic(trial.model.inputs, n, seed=cfg.seed, dynamic=cfg.sequence)


@dataclass(frozen=True)
class Int8:
    """int8 through ONNX Runtime: integer GEMM time replaces float time in the covered ops."""

    mode: str  # "dynamic" or "static"

    def predict(self, model: Model, m: Measurements, trial: Trial) -> Recommendation:
        from slimkit.quantize.config import ActivationType
        from slimkit.quantize.preflight import DYNAMIC_COVERED, INT8_COVERED, choose_activation_type

        covered_ops = DYNAMIC_COVERED if self.mode == "dynamic" else tuple(
            op for op in INT8_COVERED if "Attention" not in op)
        covered = _share(m, covered_ops)
        act = choose_activation_type(ActivationType.AUTO)
        ceiling = m.gemm_ratio_u8s8 if act == "u8" else m.gemm_ratio_s8s8
        why = [f"{covered:.0%} of kernel time is in ops {self.mode} int8 replaces; integer GEMM "
               f"({act} x s8) measured {ceiling:.2f}x fp32 on this CPU"
               f"{'' if m.int8_dot_product else ' (no VNNI: AVX2 u8 x s8 path)'}"]
        rec = Recommendation(f"int8 {self.mode}", round(amdahl(covered, ceiling), 3), "")
        conv = _share(m, ("Conv", "FusedConv", "NchwcConv"))
        if self.mode == "dynamic" and conv > 0.2:
            why.append(f"convolutions ({conv:.0%} of time) stay float in dynamic mode: use static")
        if self.mode == "static" and m.transformer:
            why.append("transformer encoder: ONNX Runtime has no QDQ Attention kernel; dynamic "
                       "int8 is the integer path here")
            rec.trial = "not tried: static int8 of a transformer encoder (see why)"
        if self.mode == "static" and m.depthwise_mac_share > 0.05:
            why.append(f"depthwise convolutions hold {m.depthwise_mac_share:.0%} of MACs: keep "
                       "per-channel weights and consider cross-layer equalisation for accuracy")
        if ceiling < PAYS:
            why.append("integer GEMM is not faster than float here: int8 buys size (about 4x "
                       "smaller weights), not speed")
        rec.why = "; ".join(why)
        return _finish(rec)

    def verify(self, rec: Recommendation, trial: Trial) -> None:
        from slimkit.quantize import QuantizeConfig, QuantMode, quantize

        cfg = trial.config
        calib = _synthetic(trial, 32) if self.mode == "static" else None
        result = quantize(trial.model, trial.workdir() / "int8.onnx",
                          QuantizeConfig(mode=QuantMode(self.mode)), calib=calib,
                          eval_data=_synthetic(trial, 8), threads=cfg.threads, measure=True)
        s = result.sections
        rec.measured_speedup = s["verdict"]["measured_speedup"]
        rec.size_ratio = round(s["size"]["quantized_bytes"] / s["size"]["float_bytes"], 3)
        sqnr = s["metric"].get("fidelity", {}).get("sqnr_db")
        rec.fidelity = f"output SQNR {sqnr:.1f} dB" if isinstance(sqnr, float) else ""
        rec.trial = (f"slimkit.quantize mode={self.mode} (synthetic data), ONNX Runtime float "
                     "vs int8 side by side")


@dataclass(frozen=True)
class StructuredPruning:
    """Channels (heads, FFN neurons) removed: MAC-op time shrinks with the MACs."""

    def predict(self, model: Model, m: Measurements, trial: Trial) -> Recommendation:
        from slimkit.prune import PruneConfig, prune

        ratio = trial.config.ratio
        name = f"structured pruning {ratio:.0%}"
        if model.module is None:
            return Recommendation(name, None, "needs the PyTorch model (this is an ONNX file)",
                                  trial="not applicable")
        try:
            result = prune(model, PruneConfig(ratio=ratio, seed=trial.config.seed))
        except SlimkitError as exc:
            return Recommendation(name, None, f"not applicable: {exc}", trial="not applicable")
        trial.state["pruned"] = result.model
        size = result.sections["size"]
        macs_ratio = max(size["macs_ratio"], 1e-6)
        covered = _share(m, MAC_OPS)
        unit = "attention heads and FFN neurons" if m.transformer else "channels"
        why = (f"the plan removes {ratio:.0%} of {unit}: MACs x{macs_ratio:.2f}, parameters "
               f"x{size['parameters_ratio']:.2f}; {covered:.0%} of kernel time is in MAC ops, "
               "the rest assumed unchanged; accuracy must be recovered by fine-tuning or "
               "distillation")
        rec = Recommendation(name, round(amdahl(covered, 1.0 / macs_ratio), 3), why,
                             size_ratio=size["parameters_ratio"])
        return _finish(rec)

    def verify(self, rec: Recommendation, trial: Trial) -> None:
        from slimkit.prune import measure_latency

        pruned = trial.state["pruned"]
        latency = measure_latency(trial.model, pruned, trial.config.threads)
        rec.measured_speedup = latency["speedup"]
        rec.fidelity = _fidelity(trial, pruned)
        rec.trial = "slimkit.prune (no fine-tuning), ONNX Runtime before vs after side by side"


@dataclass(frozen=True)
class UnstructuredPruning:
    """Zeroed weights: dense kernels multiply by zeros all the same."""

    def predict(self, model: Model, m: Measurements, trial: Trial) -> Recommendation:
        name = f"unstructured pruning {trial.config.ratio:.0%}"
        if model.module is None:
            return Recommendation(name, None, "needs the PyTorch model (this is an ONNX file)",
                                  trial="not applicable")
        return _finish(Recommendation(
            name, 1.0, "dense CPU kernels skip no zeros: no speed-up; only the compressed file "
                       "shrinks (gzip/zip), or a sparse runtime is needed"))

    def verify(self, rec: Recommendation, trial: Trial) -> None:
        from slimkit.prune import PruneConfig, PruneMode, measure_latency, prune

        cfg = trial.config
        result = prune(trial.model, PruneConfig(mode=PruneMode.UNSTRUCTURED, ratio=cfg.ratio,
                                                seed=cfg.seed))
        latency = measure_latency(trial.model, result.model, cfg.threads)
        size = result.sections["size"]
        rec.measured_speedup = latency["speedup"]
        rec.size_ratio = round(size["compressed_bytes_after"] / size["compressed_bytes_before"], 3)
        rec.fidelity = _fidelity(trial, result.model)
        rec.trial = ("slimkit.prune unstructured (no fine-tuning), ONNX Runtime before vs after; "
                     "size ratio of the zlib-compressed weights")


@dataclass(frozen=True)
class RuntimeChoice:
    """The same float model on another runtime (OpenVINO beside ONNX Runtime), measured side by
    side: nothing to predict, the measurement is the advice."""

    runtimes: tuple[str, ...] = ("onnxruntime", "openvino")

    def predict(self, model: Model, m: Measurements, trial: Trial) -> Recommendation:
        from slimkit.bench.runtime_pick import pick_runtime

        name = "runtime choice"
        cfg = trial.config
        pick = pick_runtime(model, self.runtimes, threads=cfg.threads, batch=cfg.batch)
        if len(pick.p50_ms) < 2:
            missing = "; ".join(f"{s['runtime']}: {s['why']}" for s in pick.skipped)
            return Recommendation(name, None, f"only {pick.runtime} can run here ({missing})",
                                  trial="not applicable")
        base = pick.p50_ms[self.runtimes[0]]
        times = ", ".join(f"{r} {ms:.3g} ms" for r, ms in pick.p50_ms.items())
        gain = round(base / pick.p50_ms[pick.runtime], 3)
        rec = Recommendation(f"{name}: {pick.runtime}", gain,
                             f"float model on each runtime, measured side by side ({times}, "
                             f"batch {cfg.batch}, {cfg.threads} thread(s)); combine with int8 "
                             "on the runtime it names", measured_speedup=gain,
                             trial="slimkit.bench.runtime_pick, side by side")
        return _finish(rec)

    def verify(self, rec: Recommendation, trial: Trial) -> None:
        pass  # measured in predict


def _fidelity(trial: Trial, candidate: Model) -> str:
    from slimkit.evaluate.metrics import output_fidelity, predict

    data = _synthetic(trial, 8)
    ref, out = predict(trial.model, data), predict(candidate, data)
    if float(ref.std(axis=0).mean()) <= 1e-4 * max(float(ref.std()), 1e-12):
        return "fidelity n/a: the outputs do not depend on the input (an untrained model?)"
    return f"output SQNR {output_fidelity(ref, out)['sqnr_db']:.1f} dB (no fine-tuning)"


TECHNIQUES.register("int8 dynamic")(Int8("dynamic"))
TECHNIQUES.register("int8 static")(Int8("static"))
TECHNIQUES.register("structured pruning")(StructuredPruning())
TECHNIQUES.register("unstructured pruning")(UnstructuredPruning())
TECHNIQUES.register("runtime choice")(RuntimeChoice())
