"""``slimkit.distill``: check that student and teacher fit together (output shapes, hint
layers, adapters), train a copy of the student against the frozen teacher, validate, and report
what it reached and what it cost."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.distill.config import DistillConfig
from slimkit.distill.hints import Adapters, adapter_hint, make_adapter, tap
from slimkit.distill.losses import LOSSES
from slimkit.distill.train import Metric, Setup, train
from slimkit.errors import DataError, InputError
from slimkit.model import Model, first_tensor


@dataclass
class DistillResult:
    """The distilled student (a copy; the input models are unchanged), the learned adapters
    and the report."""

    model: Model
    adapters: nn.Module
    sections: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.sections)

    def save(self, folder: str | Path, plan: Any = None) -> Path:
        """Write the student where ``slimkit.load_model`` reads it back (see ``save_student``)."""
        from slimkit.distill.save import save_student

        return save_student(self.model, folder, plan)


def distill(student: Model, teacher: Model, data: Dataset, config: DistillConfig | None = None,
            *, val: Dataset | None = None, checkpoint: str | Path | None = None,
            resume: bool = False) -> DistillResult:
    """Distil ``teacher`` into a copy of ``student`` on ``data``.

    Args:
        student: a torch model (e.g. a pruned or shallower copy of the teacher).
        teacher: a torch model run frozen, in eval mode.
        data: training inputs (labels used by ``kd`` when present; embedding losses need none).
        config: loss, temperature, alpha, hint pairs, optimizer, steps, seed, early stop.
        val: validation data: accuracy with labels (``kd``), else agreement with the teacher
            (mean cosine for embeddings, top-1 agreement for logits). Enables early stopping
            and the return of the best student seen.
        checkpoint: a folder for checkpoints (safetensors + JSON, atomic).
        resume: continue from the checkpoint in that folder (same settings required); the
            result equals that of an uninterrupted run.

    Example:
        >>> import numpy as np
        >>> from slimkit.testing import tiny_model
        >>> t = tiny_model("mlp")
        >>> x = Dataset({"input": np.random.default_rng(0).normal(size=(16, 8)).astype("f4")})
        >>> r = distill(t, t, x, DistillConfig(loss="embedding-mse", epochs=5, max_steps=2))
        >>> r.sections["steps"]
        2
    """
    config = config or DistillConfig()
    s_module = copy.deepcopy(student.require_module("distillation (student)"))
    t_module = teacher.require_module("distillation (teacher)")
    _check_data(student, teacher, data)
    teacher_was_training = t_module.training
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    try:
        adapters = build_adapters(s_module, t_module, student, data, config)
        setup = Setup(s_module, t_module, adapters, student.input_names, config)
        metric, metric_name = _metric(setup, val, config)
        before = _run_metric(metric, setup)
        state = train(setup, data, metric, Path(checkpoint) if checkpoint else None, resume)
        after = _run_metric(metric, setup)
    finally:
        t_module.train(teacher_was_training)
    report = {"config": config.to_dict(), "seed": config.seed, "examples": len(data),
              "steps": state.step, "loss": state.losses, "validation": {
                  "metric": metric_name, "before": before, "after": after,
                  "best_step": state.best_step, "history": state.evaluations},
              "stopped_early": state.stopped_early, "resumed_from": state.resumed_from,
              "adapters": {k: str(v) for k, v in adapters.maps.items()},
              "wall_seconds": round(time.perf_counter() - start_wall, 2),
              "cpu_seconds": round(time.process_time() - start_cpu, 2)}
    distilled = replace(student, module=s_module.eval(), name=f"{student.name}-distilled",
                        meta={**student.meta, "distilled_from": teacher.source})
    return DistillResult(distilled, adapters, report)


def _check_data(student: Model, teacher: Model, data: Dataset) -> None:
    if len(data) == 0:
        raise DataError("distillation needs at least one example")
    for role, model in (("student", student), ("teacher", teacher)):
        missing = [n for n in model.input_names if n not in data.inputs]
        if missing:
            raise DataError(f"the {role} '{model.name}' needs inputs {list(model.input_names)};"
                            f" the data has no {missing}")
    if teacher.input_names != student.input_names:
        raise InputError(f"student inputs {list(student.input_names)} differ from teacher "
                         f"inputs {list(teacher.input_names)}; both must take the same inputs")


def build_adapters(s_module: nn.Module, t_module: nn.Module, student: Model, data: Dataset,
                   config: DistillConfig) -> Adapters:
    """Run one batch through both models, check the output shapes and create an adapter for
    every hint pair (and the output, when allowed) whose widths differ; seeded by ``seed``."""
    batch = data.first_batch(min(2, len(data)))
    args = student.torch_args(batch)
    s_names = tuple(s for s, _ in config.features)
    t_names = tuple(t for _, t in config.features)
    s_mode, t_mode = s_module.training, t_module.training
    s_module.eval()
    t_module.eval()
    try:
        with torch.no_grad(), tap(s_module, s_names, "student") as s_seen, \
                tap(t_module, t_names, "teacher") as t_seen:
            s_out = first_tensor(s_module(*args))
            t_out = first_tensor(t_module(*args))
    finally:
        s_module.train(s_mode)
        t_module.train(t_mode)
    adapters = Adapters()
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        _output_adapter(adapters, tuple(s_out.shape), tuple(t_out.shape), config)
        for s_name, t_name in config.features:
            adapters.add(s_name, make_adapter(tuple(s_seen[s_name].shape),
                                              tuple(t_seen[t_name].shape),
                                              f"hint pair ('{s_name}', '{t_name}')"))
    return adapters


def _output_adapter(adapters: Adapters, s_shape: tuple[int, ...], t_shape: tuple[int, ...],
                    config: DistillConfig) -> None:
    if s_shape == t_shape:
        return
    what = f"student output shape {s_shape} differs from teacher output shape {t_shape}"
    if config.loss == "kd":
        raise InputError(f"{what}: soft-target distillation compares class distributions, so "
                         "both must give the same number of classes; fix the student's head")
    if not config.output_adapter:
        raise InputError(f"{what}: {adapter_hint(s_shape, t_shape)}; set output_adapter=True "
                         "(--output-adapter) to learn it, or make the widths agree")
    adapters.add("output", make_adapter(s_shape, t_shape, what))


def _metric(setup: Setup, val: Dataset | None,
            config: DistillConfig) -> tuple[Metric | None, str | None]:
    if val is None:
        return None, None
    args_all = {k: torch.from_numpy(v) for k, v in val.inputs.items()}
    args = tuple(args_all[n] for n in setup.input_names)
    if val.labels is not None and config.loss == "kd":
        labels = torch.from_numpy(val.labels)
        return (lambda s, a: float((_outputs(s, args).argmax(-1) == labels).float().mean())), \
            "accuracy"
    with torch.no_grad():
        reference = _outputs(setup.teacher, args)
    if config.loss == "kd":
        return (lambda s, a: float((_outputs(s, args).argmax(-1) == reference.argmax(-1))
                                   .float().mean())), "top1_agreement_with_teacher"
    cos = nn.functional.cosine_similarity
    return (lambda s, a: float(cos(a.adapt("output", _outputs(s, args)).flatten(1),
                                   reference.flatten(1)).mean())), "cosine_to_teacher"


def _outputs(module: nn.Module, args: tuple[torch.Tensor, ...], batch: int = 256) -> torch.Tensor:
    n = len(args[0])
    with torch.no_grad():
        return torch.cat([first_tensor(module(*(a[i:i + batch] for a in args)))
                          for i in range(0, n, batch)])


def _run_metric(metric: Metric | None, setup: Setup) -> float | None:
    if metric is None:
        return None
    mode = setup.student.training
    setup.student.eval()
    try:
        with torch.no_grad():
            return round(metric(setup.student, setup.adapters), 6)
    finally:
        setup.student.train(mode)


def finetune_loss(config: DistillConfig | None = None) -> Callable[[Any, Any], torch.Tensor]:
    """A ``loss_fn(student_outputs, batch)`` for ``slimkit.train.finetune`` (its distillation
    hook): the configured output loss against ``batch.teacher_outputs`` and ``batch.labels``.
    Pass it with the teacher in ``TrainHooks(loss_fn=..., teacher=...)``. Hint pairs need
    :func:`distill` itself.

    Example:
        >>> from types import SimpleNamespace
        >>> fn = finetune_loss(DistillConfig(loss="embedding-cosine"))
        >>> round(float(fn(torch.ones(2, 3), SimpleNamespace(teacher_outputs=torch.ones(2, 3),
        ...                                                   labels=None))), 6)
        0.0
    """
    config = config or DistillConfig()
    if config.features:
        raise InputError("hint pairs (features) need slimkit.distill itself; the fine-tuning "
                         "hook sees only the outputs")
    strategy = LOSSES.get(config.loss)

    def loss_fn(outputs: Any, batch: Any) -> torch.Tensor:
        if batch.teacher_outputs is None:
            raise InputError("the distillation loss needs teacher outputs: pass the teacher "
                             "in TrainHooks(teacher=...)")
        return strategy(first_tensor(outputs), batch.teacher_outputs, batch.labels, config)

    return loss_fn
