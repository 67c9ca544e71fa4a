"""The stage layer: every compression technique plugs into recipes (and the search) as one
``StageType`` in the ``STAGES`` registry: its config dataclass and a handler that turns the
pipeline's current model into the next one.

Built in: prune, batchnorm, finetune, quantize, export. Techniques whose packages may be absent
(distill, cluster, lowrank, tune) register from ``slimkit.recipe.optional`` only when they
import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.data import Dataset
from slimkit.evaluate.metrics import UserMetric
from slimkit.model import Model
from slimkit.registry import Registry


@dataclass
class PipelineState:
    """What flows from stage to stage: the current model (torch, or an ONNX file once exported
    or quantized), the original (teacher, reference), the data, a scratch folder."""

    model: Model
    original: Model
    train: Dataset | None
    eval_data: Dataset | None
    workdir: Path
    metric: UserMetric | None = None
    threads: int = 1
    plans: list[Any] = field(default_factory=list)
    counter: int = 0

    def scratch(self, name: str) -> Path:
        """A fresh path in the scratch folder (stages may repeat)."""
        self.counter += 1
        return self.workdir / f"{self.counter:02d}-{name}"


Handler = Callable[[Any, PipelineState], dict[str, Any]]


@dataclass(frozen=True)
class StageType:
    """One technique as a pipeline stage.

    ``needs_torch``: the stage reads a torch module (it cannot follow export or quantize);
    ``makes_onnx``: after it, the model is an ONNX file.
    """

    name: str
    config: type
    run: Handler
    needs_torch: bool = True
    makes_onnx: bool = False
    description: str = ""


STAGES: Registry[StageType] = Registry("recipe stage")


def register_stage(stage: StageType) -> StageType:
    """Add a technique to recipes and the search (``STAGES``)."""
    STAGES.register(stage.name)(stage)
    return stage


def _prune(config: Any, state: PipelineState) -> dict[str, Any]:
    from slimkit.prune import prune

    result = prune(state.model, config, state.train)
    state.model = result.model
    state.plans.append(result.plan)
    return {key: result.sections[key] for key in ("config", "size", "skipped")
            if key in result.sections}


def _finetune(config: Any, state: PipelineState) -> dict[str, Any]:
    from slimkit.recipe.finetune import finetune

    state.model, report = finetune(state.model, config, state.train, teacher=state.original)
    return report


def _batchnorm(config: Any, state: PipelineState) -> dict[str, Any]:
    from slimkit.errors import DataError
    from slimkit.train.batchnorm import recalibrate_batchnorm

    if state.train is None:
        raise DataError("the batchnorm stage needs training data (--train or --data)")
    state.model = recalibrate_batchnorm(state.model, state.train, config.batches,
                                        config.batch_size, config.seed)
    return {"config": config.to_dict()}


def _quantize(config: Any, state: PipelineState) -> dict[str, Any]:
    from slimkit.quantize import quantize

    out = state.scratch("quantized.onnx")
    result = quantize(state.model, out, config, calib=state.train, eval_data=state.eval_data,
                      metric=state.metric, threads=state.threads, measure=False)
    state.model = result.model
    keep = ("config", "metric", "kept_float", "proof", "size", "preflight")
    return {"met_budget": result.met_budget,
            **{k: result.sections[k] for k in keep if k in result.sections}}


def _export(config: Any, state: PipelineState) -> dict[str, Any]:
    from slimkit.export.onnx import export_onnx

    sample = state.eval_data.take(config.verify_examples) if state.eval_data else None
    result = export_onnx(state.model, state.scratch("model.onnx"), config, sample)
    state.model = result.model
    return result.to_dict()


def _register_builtin() -> None:
    from slimkit.export.onnx import ExportConfig
    from slimkit.prune import PruneConfig
    from slimkit.quantize import QuantizeConfig
    from slimkit.recipe.finetune import FinetuneConfig
    from slimkit.train.batchnorm import BatchNormConfig

    register_stage(StageType("prune", PruneConfig, _prune,
                             description="remove channels (structured) or mask weights"))
    register_stage(StageType("batchnorm", BatchNormConfig, _batchnorm,
                             description="re-estimate BatchNorm statistics after pruning"))
    register_stage(StageType("finetune", FinetuneConfig, _finetune,
                             description="recover accuracy: CE on labels, else MSE to original"))
    register_stage(StageType("quantize", QuantizeConfig, _quantize, needs_torch=False,
                             makes_onnx=True, description="int8/int4/fp16 in ONNX Runtime"))
    register_stage(StageType("export", ExportConfig, _export, makes_onnx=True,
                             description="verified ONNX export"))


_register_builtin()


