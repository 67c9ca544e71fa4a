"""Stage (a): which candidates are screened. A space no larger than ``trials`` is screened
whole (nothing to sample); a larger one by Optuna's TPE sampler over the discrete space, two
objectives (bytes read per token, the budget's measure) with the budget as a constraint, after
the single techniques are enqueued (the comparison the report makes needs them screened)."""

from __future__ import annotations

import logging
from typing import Any

from slimkit.progress import progress
from slimkit.search.llm.config import LLMSearchConfig
from slimkit.search.llm.space import Candidate, enumerate_space, optuna_params, suggest

log = logging.getLogger(__name__)
CONSTRAINT = "constraint"
# a prior for the estimate before any finalist is measured: ms per token = a + bytes / b
PRIOR_OVERHEAD_MS, PRIOR_BYTES_PER_MS = 2.0, 10e6


def estimate_tok_s(bytes_per_token: float, fit: tuple[float, float] | None = None) -> float:
    """Decode tokens/s from the bytes read per token: ``1000 / (a + bytes * b)``."""
    a, b = fit or (PRIOR_OVERHEAD_MS, 1 / PRIOR_BYTES_PER_MS)
    return round(1000.0 / (a + b * bytes_per_token), 2)


def run_screen(stages: Any, config: LLMSearchConfig) -> tuple[list[dict[str, Any]], str]:
    """The screened trial rows (in screening order) and how they were chosen."""
    space = enumerate_space(config)
    if len(space) <= config.trials:
        how = f"exhaustive: the space has {len(space)} candidates <= trials {config.trials}"
        rows = [_row(i, c, stages.screen(c), config)
                for i, c in enumerate(progress(space, "screening candidates", total=len(space)))]
        return rows, how
    how = (f"Optuna TPE over {len(space)} candidates, {config.trials} trials (the single "
           "techniques enqueued first)")
    return _sampled(stages, config, space), how


def _sampled(stages: Any, config: LLMSearchConfig,
             space: list[Candidate]) -> list[dict[str, Any]]:
    import optuna

    from slimkit.search.study import constraint_of

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_constraints = hasattr(optuna.trial.Trial, "set_constraint")
    extra: dict[str, Any] = {} if trial_constraints else {"constraints_func": constraint_of}
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=6, **extra)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    singles = [c for c in space if c.single and c.precision != "fp32"]
    for candidate in _spread(singles, max(1, config.trials // 2)):
        study.enqueue_trial(optuna_params(candidate))
    rows: list[dict[str, Any]] = []
    measure, limit = config.budget
    for _ in progress(range(config.trials), "screening candidates", total=config.trials):
        trial = study.ask()
        candidate = suggest(trial, config)
        score = stages.screen(candidate)
        excess = round(float(score[measure] - limit), 6)
        trial.set_user_attr(CONSTRAINT, excess)
        if trial_constraints:
            trial.set_constraint(measure, excess)
        study.tell(trial, [score["bytes_per_token"], score[measure]])
        if all(r["label"] != candidate.label for r in rows):
            rows.append(_row(len(rows), candidate, score, config))
    return rows


def _spread(items: list[Candidate], count: int) -> list[Candidate]:
    """``count`` items spread evenly over ``items`` (its order mixes the techniques)."""
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _row(index: int, candidate: Candidate, score: dict[str, Any],
         config: LLMSearchConfig) -> dict[str, Any]:
    measure, limit = config.budget
    return {"trial": index, "label": candidate.label, **candidate.to_dict(),
            "single": candidate.single, **score,
            "tokens_per_s": estimate_tok_s(score["bytes_per_token"]),
            "feasible": bool(score[measure] <= limit), "candidate": candidate}
