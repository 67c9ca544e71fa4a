"""Accuracy-aware quantization: when the metric drops more than the budget, rank layers by the
error they add (diagnosis) and revert the worst to float, one group at a time, re-quantizing and
re-scoring after each group, until the drop fits. Every step is recorded."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from slimkit.quantize.config import QuantizeConfig
from slimkit.quantize.diagnose import layer_errors
from slimkit.quantize.methods import METHODS, QuantJob
from slimkit.quantize.scoring import Score, Scorer
from slimkit.selector import Layer

MAX_STEPS = 30
TRIAL_LAYERS = 12  # layers tried one at a time (the worst by added error)


def budget_of(config: QuantizeConfig, float_value: float) -> float:
    assert config.max_drop is not None  # only called with a budget
    return config.max_drop * abs(float_value) if config.relative_drop else config.max_drop


def revert_until_within_budget(job: QuantJob, layers: list[Layer], scorer: Scorer, score: Score,
                               config: QuantizeConfig
                               ) -> tuple[QuantJob, Score, dict[str, Any], bool]:
    """Returns the job of the model kept, its score, the steps taken, and whether it fits."""
    budget = budget_of(config, score.float_value)
    steps: list[dict[str, Any]] = [_step(0, [], score)]
    if score.drop <= budget:
        return job, score, {"budget": budget, "steps": steps, "reverted": []}, True
    errors = layer_errors(job.float_path, job.out_path, layers, scorer.data, job.input_names)
    by_error = [e.layer for e in sorted(errors, key=lambda e: -e.added_db)
                if e.layer not in job.exclude_nodes]
    sensitivity = _one_at_a_time(job, by_error[:TRIAL_LAYERS], scorer, config, score)
    tried = sorted(sensitivity, key=lambda name: -sensitivity[name])
    ranked = tried + [name for name in by_error if name not in sensitivity]
    group = max(1, math.ceil(len(ranked) / MAX_STEPS))
    best_job, best_score, reverted = job, score, []
    for start in range(0, len(ranked), group):
        reverted = ranked[: start + group]
        candidate = _requantize(job, reverted, f"quant-{start}.onnx", config)
        candidate_score = scorer.score(candidate.out_path)
        steps.append(_step(len(steps), reverted, candidate_score))
        if candidate_score.drop < best_score.drop:
            best_job, best_score = candidate, candidate_score
        if candidate_score.drop <= budget:
            best_job, best_score = candidate, candidate_score
            break
    fits = best_score.drop <= budget
    kept = [n for n in best_job.exclude_nodes if n not in job.exclude_nodes]
    report = {"budget": budget, "steps": steps, "reverted": kept,
              "sensitivity": [{"layer": n, "drop_recovered": sensitivity[n]} for n in tried],
              "layer_errors": [e.to_dict() for e in errors]}
    if not fits:
        report["message"] = (f"the drop {best_score.drop:.4g} exceeds the budget {budget:.4g} "
                             "even with every quantized layer reverted; the best model found "
                             "was written")
    return best_job, best_score, report, fits


def _requantize(job: QuantJob, reverted: list[str], name: str,
                config: QuantizeConfig) -> QuantJob:
    candidate = replace(job, out_path=job.out_path.with_name(name),
                        exclude_nodes=job.exclude_nodes + tuple(reverted))
    METHODS.get(config.mode.value)(candidate)
    return candidate


def _one_at_a_time(job: QuantJob, names: list[str], scorer: Scorer, config: QuantizeConfig,
                   base: Score) -> dict[str, float]:
    """How much of the drop reverting each layer alone recovers: the effect on the metric that
    per-layer error only estimates (an activation's error shows at its producer, while
    reverting its consumer is what removes it)."""
    effect = {}
    for i, name in enumerate(names):
        trial = _requantize(job, [name], f"trial-{i}.onnx", config)
        effect[name] = base.drop - scorer.score(trial.out_path).drop
        trial.out_path.unlink()
    return effect


def _step(index: int, reverted: list[str], score: Score) -> dict[str, Any]:
    return {"step": index, "reverted_layers": len(reverted), "metric": score.value,
            "drop": score.drop}
