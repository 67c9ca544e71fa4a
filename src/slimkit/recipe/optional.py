"""Stage adapters for techniques that live in packages which may be absent: each registers only
when its module imports and exposes its config class and verb.

The adapters bind the verb's arguments by parameter name (``model``/``student``, ``teacher``,
``config``, ``data``/``train``), so a technique only needs the usual form
``verb(model, config, data) -> result`` whose result carries ``.model`` (or is a Model).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

from slimkit.errors import InputError
from slimkit.model import Model
from slimkit.recipe.stages import STAGES, PipelineState, StageType, register_stage

log = logging.getLogger(__name__)

# stage name -> (module, config class names, verb names): the first names found are used
OPTIONAL: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "distill": ("slimkit.distill", ("DistillConfig",), ("distill",)),
    "cluster": ("slimkit.cluster", ("ClusterConfig",), ("cluster",)),
    "lowrank": ("slimkit.lowrank", ("LowRankConfig", "LowrankConfig"),
                ("low_rank", "lowrank", "factorize")),
    "tune": ("slimkit.bench.tune", ("TuneConfig",), ("tune",)),
}
# stages that measure rather than transform: they run on torch or ONNX and keep the model
MEASURING = ("tune",)
ROLES = {"model": "model", "student": "model", "teacher": "teacher", "config": "config",
         "data": "train", "train": "train", "train_data": "train", "dataset": "train",
         "eval_data": "eval"}


def register_optional() -> list[str]:
    """Register every optional technique that imports; returns the names registered now."""
    added = []
    for name, (module_name, configs, verbs) in OPTIONAL.items():
        if name in STAGES:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        config = next((getattr(module, c) for c in configs if hasattr(module, c)), None)
        verb = next((getattr(module, v) for v in verbs if hasattr(module, v)), None)
        if config is None or verb is None:
            log.info("stage %s: %s lacks %s or %s; not registered", name, module_name,
                     configs, verbs)
            continue
        register_stage(StageType(name, config, _adapter(name, verb),
                                 needs_torch=name not in MEASURING,
                                 description=f"{module_name}.{verb.__name__}"))
        added.append(name)
    return added


def _adapter(name: str, verb: Callable[..., Any]) -> Callable[[Any, PipelineState],
                                                              dict[str, Any]]:
    def run(config: Any, state: PipelineState) -> dict[str, Any]:
        values = {"model": state.model, "teacher": state.original, "config": config,
                  "train": state.train, "eval": state.eval_data}
        kwargs = {}
        for param in inspect.signature(verb).parameters.values():
            role = ROLES.get(param.name)
            if role is not None:
                kwargs[param.name] = values[role]
            elif param.default is inspect.Parameter.empty and param.kind not in (
                    param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise InputError(f"stage {name}: cannot supply argument '{param.name}' of "
                                 f"{verb.__name__}()")
        result = verb(**kwargs)
        model = result if isinstance(result, Model) else getattr(result, "model", None)
        if isinstance(model, Model):
            state.model = model
        elif name not in MEASURING:
            raise InputError(f"stage {name}: {verb.__name__}() returned no model")
        sections = getattr(result, "sections", None)
        if isinstance(sections, dict):
            return dict(sections)
        to_dict = getattr(result, "to_dict", None)
        return dict(to_dict()) if callable(to_dict) else {}

    return run


def stage_type(name: str, path: str) -> StageType:
    """The registered stage ``name``, or an error at ``path`` listing the known stages."""
    register_optional()
    if name not in STAGES:
        raise InputError(f"{path}: unknown stage '{name}'; allowed: {', '.join(STAGES.names())}")
    return STAGES.get(name)
