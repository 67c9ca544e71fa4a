"""The Optuna study behind a search: RDB storage (a SQLite file by default) so an interrupted
search resumes; batches of trials asked, evaluated (in order) and told, with the sampler
re-seeded from (seed, trials so far) before each batch, so a resumed or a Ray-run search asks
exactly the points an uninterrupted in-process one would. A storage holding a study of another
model or space is refused."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slimkit._deps import require
from slimkit.errors import InputError
from slimkit.search.config import SamplerKind, SearchConfig
from slimkit.search.space import INT8, SearchSpace

log = logging.getLogger(__name__)
CONSTRAINT = "constraint"  # user attr: proxy drop minus the allowed drop (<= 0: feasible)
Evaluate = Callable[[list[dict[str, Any]]], list[dict[str, float]]]


def optuna_module() -> Any:
    return require("optuna", "the automatic search")


def storage_url(storage: str) -> str:
    """An RDB URL as given, or ``sqlite:///PATH`` for a file path."""
    if "://" in storage:
        return storage
    return f"sqlite:///{Path(storage).expanduser().resolve()}"


def constraint_of(trial: Any) -> list[float]:
    """Optuna's ``constraints_func``: the stored proxy-drop excess."""
    return [float(trial.user_attrs.get(CONSTRAINT, 1.0))]


def _trial_constraints(optuna: Any) -> bool:
    """Optuna >= 5 stores constraints on the trial (``set_constraint``); older versions take
    a ``constraints_func``."""
    return hasattr(optuna.trial.Trial, "set_constraint")


def make_sampler(config: SearchConfig, done: int) -> Any:
    optuna = optuna_module()
    seed = (config.seed * 1_000_003 + done) % (2**32)
    extra = {} if _trial_constraints(optuna) else {"constraints_func": constraint_of}
    if config.sampler == SamplerKind.NSGA2:
        return optuna.samplers.NSGAIISampler(population_size=max(4, 2 * config.workers),
                                             seed=seed, **extra)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True,
                                      **extra)


def directions(config: SearchConfig) -> list[str]:
    """Objectives of the proxy trials: cost(s) then the metric drop, all minimised."""
    costs = {"latency": 1, "size": 1, "both": 2}[config.objective.value]
    return ["minimize"] * (costs + 1)


def objective_values(config: SearchConfig, result: dict[str, float],
                     single: bool = False) -> list[float]:
    """Cost(s) then drop; ``single``: one cost only (MACs x bytes for ``both``), the drop
    being left to the constraint."""
    costs = {"latency": ["macs"], "size": ["bytes"], "both": ["macs", "bytes"]}
    values = [result[k] for k in costs[config.objective.value]]
    if single:
        return [round(float(np.prod(values)), 9)]
    return values + [result["drop"]]


def open_study(config: SearchConfig, storage: str, name: str, model_digest: str,
               space: SearchSpace, seeds: list[dict[str, Any]] | None = None,
               single: bool = False) -> Any:
    """Create the study, or load it after checking it was made for this model and space.

    A new study first evaluates ``seeds`` (default: the uniform points); ``single``: one
    objective (the cost) under the drop constraint."""
    optuna = optuna_module()
    url = storage_url(storage)
    expected = {"model_digest": model_digest, "space_hash": space.digest(),
                "objective": config.objective.value, "sampler": config.sampler.value,
                "seed": config.seed, "max_drop": config.proxy_limit,
                "bn_batches": config.bn_batches, "single": single}
    with quiet_optuna():
        try:
            study = optuna.load_study(study_name=name, storage=url)
        except KeyError:
            study = optuna.create_study(study_name=name, storage=url, directions=(
                ["minimize"] if single else directions(config)))
            for key, value in expected.items():
                study.set_user_attr(key, value)
            for params in uniform_points(space) if seeds is None else seeds:
                study.enqueue_trial(params)
            return study
    found = study.user_attrs
    for key, value in expected.items():
        if found.get(key) != value:
            raise InputError(
                f"storage '{storage}' holds study '{name}' made with {key}={found.get(key)!r}, "
                f"this search has {value!r}: refusing to mix trials of different models or "
                "spaces; use another --storage file or study name")
    return study


def uniform_points(space: SearchSpace) -> list[dict[str, Any]]:
    """The first trials of every study: each group at one ratio of the space (capped by what
    the group allows), float, then (when int8 is in the space) int8 with no pruning, so the
    single-technique points are always judged beside the searched ones.

    Example:
        >>> from slimkit.search.space import GroupChoice
        >>> s = SearchSpace((GroupChoice("a", 8, (0.0, 0.5)), GroupChoice("b", 8, (0.0, 0.5,
        ...     0.75))), (), (), quantize=False)
        >>> uniform_points(s)
        [{'ratio:a': 0.5, 'ratio:b': 0.5}, {'ratio:a': 0.5, 'ratio:b': 0.75}]
    """
    ratios = sorted({r for group in space.groups for r in group.ratios if r > 0})
    points: list[dict[str, Any]] = []
    for ratio in ratios:
        point: dict[str, Any] = {f"ratio:{g.key}": max(r for r in g.ratios if r <= ratio)
                                 if min(g.ratios) <= ratio else min(g.ratios)
                                 for g in space.groups}
        if space.quantize:
            point[INT8] = False
            point.update({f"float:{layer}": False for layer in space.quant_choices})
        if point not in points:
            points.append(point)
    if space.quantize:
        int8: dict[str, Any] = {f"ratio:{g.key}": min(g.ratios) for g in space.groups}
        int8[INT8] = True
        int8.update({f"float:{layer}": False for layer in space.quant_choices})
        points.append(int8)
    return points


def run_trials(config: SearchConfig, storage: str, name: str, space: SearchSpace,
               evaluate: Evaluate, deadline: float | None, single: bool = False) -> None:
    """Run proxy trials until ``config.trials`` are finished (or the deadline passes)."""
    optuna = optuna_module()
    url = storage_url(storage)
    running = optuna.trial.TrialState.RUNNING
    while deadline is None or time.monotonic() < deadline:
        with quiet_optuna():
            trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
            # enqueued (waiting) points are asked first and count once they run
            started = [t for t in trials if t.state != optuna.trial.TrialState.WAITING]
            study = optuna.load_study(study_name=name, storage=url,
                                      sampler=make_sampler(config, len(started)))
            # trials left RUNNING by an interrupted run are evaluated again; Optuna has no
            # public way to reopen a stored trial by number, hence its _trial_id
            pending = [(t.number, t._trial_id, dict(t.params)) for t in trials
                       if t.state == running]
            if not pending:
                count = min(config.workers, config.trials - len(started))
                if count <= 0:
                    return
                for _ in range(count):
                    trial = study.ask()
                    pending.append((trial.number, trial._trial_id, space.suggest(trial)))
        results = evaluate([params for _, _, params in pending])
        with quiet_optuna():
            for (number, trial_id, _), result in zip(pending, results, strict=True):
                handle = optuna.trial.Trial(study, trial_id)
                for key, value in result.items():
                    handle.set_user_attr(key, value)
                limit = config.proxy_limit
                excess = 0.0 if limit is None else round(result["drop"] - limit, 6)
                handle.set_user_attr(CONSTRAINT, excess)
                if _trial_constraints(optuna):
                    handle.set_constraint("drop", excess)
                study.tell(number, objective_values(config, result, single))
    log.warning("search budget reached during the proxy trials")


def finished(study: Any) -> list[Any]:
    optuna = optuna_module()
    return [t for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE]


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines off for a block; the caller's verbosity restored."""
    optuna = optuna_module()
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
