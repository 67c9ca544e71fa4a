"""Accuracy-aware quantization: when the metric drops more than the budget, rank layers by the
error they add (diagnosis) and revert the worst to float, one group at a time, re-quantizing and
re-scoring after each group, until the drop fits. Every step is recorded."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

from slimkit.quantize.config import QuantizeConfig
from slimkit.quantize.diagnose import layer_errors
from slimkit.quantize.layer_cost import by_benefit_per_cost, layer_macs, revert_costs
from slimkit.quantize.methods import METHODS, QuantJob
from slimkit.quantize.scoring import Score, Scorer
from slimkit.selector import Layer

logger = logging.getLogger(__name__)
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
    noise = float_noise(scorer, job)
    if budget < noise:
        logger.warning("budget %.3g is below the float model's own run-to-run noise %.3g",
                       budget, noise)
    if score.drop <= budget:
        return job, score, {"budget": budget, "float_noise": noise, "steps": steps,
                            "reverted": [], **_noise_note(budget, noise)}, True
    errors = layer_errors(job.float_path, job.out_path, layers, scorer.data, job.input_names)
    by_error = [e.layer for e in sorted(errors, key=lambda e: -e.added_db)
                if e.layer not in job.exclude_nodes]
    sensitivity = _one_at_a_time(job, by_error[:TRIAL_LAYERS], scorer, config, score)
    costs, ratio = _costs(job, layers)
    tried = by_benefit_per_cost(sensitivity, costs)  # recovered metric per unit of lost time
    untried = {e.layer: e.added_db for e in errors if e.layer in by_error
               and e.layer not in sensitivity}
    ranked = tried + by_benefit_per_cost(untried, costs)
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
    report = {"budget": budget, "float_noise": noise, **_noise_note(budget, noise),
              "steps": steps, "reverted": kept,
              "sensitivity": [{"layer": n, "drop_recovered": sensitivity[n],
                               "relative_cost": round(costs.get(n, 0.0), 4)} for n in tried],
              "cost_model": {"int8_over_fp32_gemm": round(ratio, 3),
                             "cost": "MACs x (1 - 1/ratio), largest = 1; layers reverted in "
                                     "order of metric recovered per unit of cost"},
              "layer_errors": [e.to_dict() for e in errors]}
    if not fits:
        report["message"] = (f"the drop {best_score.drop:.4g} exceeds the budget {budget:.4g} "
                             "even with every quantized layer reverted; the best model found "
                             "was written")
    return best_job, best_score, report, fits


def float_noise(scorer: Scorer, job: QuantJob) -> float:
    """How far the float model's own metric moves when it runs another way (batch 1, two
    threads, against the batched one-thread reference): a budget below it cannot be told
    apart from noise."""
    from dataclasses import replace as _replace

    from slimkit.evaluate import predict

    model = _replace(scorer.model.with_onnx(job.float_path), name="float-noise")
    outputs = predict(model, scorer.data, "onnxruntime", batch_size=1, threads=2)
    return max(0.0, scorer.float_value - scorer.value_of(outputs))


def _noise_note(budget: float, noise: float) -> dict[str, str]:
    if budget >= noise:
        return {}
    return {"noise_warning": f"the budget {budget:.3g} is below the float model's own "
                             f"run-to-run noise {noise:.3g} (the same fp32 model run at another "
                             "batch size and thread count): meeting it cannot be told apart "
                             "from noise; a budget of at least the noise is meaningful"}


def _costs(job: QuantJob, layers: list[Layer]) -> tuple[dict[str, float], float]:
    """Each layer's relative revert cost on this CPU (see ``layer_cost``), from the integer /
    float GEMM ratio the preflight measured here."""
    from slimkit.quantize.graph import load_proto
    from slimkit.quantize.preflight import gemm_ratios

    u8s8, s8s8 = gemm_ratios()
    ratio = u8s8 if job.activation_type == "u8" else s8s8
    macs = layer_macs(load_proto(job.float_path), [layer.name for layer in layers])
    return revert_costs(macs, ratio), ratio


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
