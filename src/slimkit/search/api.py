"""``slimkit.search``: find the smallest or fastest compressed model whose metric drop stays
within a budget. Evaluation noise first, a cached sensitivity scan, Optuna proxy trials (pruning
ratio per group, int8 or float per layer; BatchNorm statistics re-estimated; the uniform points
first; resumable, in process or on Ray), then points of the proxy front compressed for real
(fine-tuned, verified in ONNX Runtime) in bisection order, cheapest first; when they are
fine-tuned, a second proxy round under the drop limit they calibrated looks for cheaper points
of the same proxy quality (``refine.py``). All finalists are measured side by side; the best is
exported with its recipe, and the whole front is reported."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slimkit.data import Dataset
from slimkit.evaluate.metrics import UserMetric
from slimkit.io import prepare_output_folder, write_text_atomic
from slimkit.model import Model
from slimkit.recipe import Recipe
from slimkit.recipe.metric import Scorer
from slimkit.recipe.run import MODEL_FILE, RECIPE_FILE
from slimkit.search.config import SearchConfig
from slimkit.search.finalists import Finalists
from slimkit.search.proxy import TrialContext, layer_costs
from slimkit.search.space import (
    GroupChoice,
    SearchSpace,
    channel_groups,
    int8_mode,
    model_digest,
    quantizable_modules,
)
from slimkit.train.batchnorm import has_batchnorm

log = logging.getLogger(__name__)
REPORT_FILE = "search-report.json"
STORAGE_FILE = "search.db"


@dataclass
class SearchResult:
    """The best model (``folder/model.onnx``; the closest one when nothing met the budget),
    its recipe, the measured front and the proxy front."""

    folder: Path
    model: Model
    recipe: Recipe
    met_budget: bool
    front: list[dict[str, Any]]
    sections: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "met_budget": self.met_budget, **self.sections}


def search(model: Model, data: Dataset, output: str | Path, config: SearchConfig | None = None,
           train: Dataset | None = None, metric: UserMetric | None = None) -> SearchResult:
    """Search compressions of ``model`` under ``config.max_drop``; write ``output/``.

    Args:
        model: a torch model (not modified).
        data: evaluation data (labels give accuracy; otherwise cosine to the original).
        output: folder for model.onnx, recipe.yaml, search-report.json, search.db and the
            finalists under candidates/.
        config: budget, objective, trials, executor, storage, seed.
        train: fine-tuning and calibration data (``data`` by default).
        metric: a user metric ``(outputs, labels) -> float``, higher is better.

    Example:
        >>> import tempfile
        >>> from slimkit.testing import tiny_model
        >>> from slimkit.data import synthetic
        >>> m = tiny_model("cnn")
        >>> r = search(m, synthetic(m.inputs, 16), tempfile.mkdtemp(), SearchConfig(
        ...     trials=2, finalists=1, finetune_epochs=0, quantize=False, max_drop=1.0))
        >>> r.met_budget, r.model.onnx_path.name
        (True, 'model.onnx')
    """
    from slimkit.search.finalists import candidates, choose, pareto
    from slimkit.search.study import finished, open_study

    config = config or SearchConfig()
    if config.bn_batches and not has_batchnorm(model):
        config = replace(config, bn_batches=0)  # nothing to recalibrate: no recipe stage
    start = time.monotonic()
    deadline = start + config.budget_s if config.budget_s else None
    folder = prepare_output_folder(output)
    sections: dict[str, Any] = {"kind": "search", "config": config.to_dict(),
                                "seed": config.seed, "warnings": [],
                                "objectives": report_objectives(config)}
    sections["noise"] = _noise(model, data, metric, config, sections["warnings"])
    digest = model_digest(model)
    ctx, space, sections["sensitivity"] = _prepare(model, data, train or data, metric, config,
                                                   digest)
    sections["space"] = space.to_dict()
    sections["int8_speed"] = ctx.int8_speed
    storage = config.storage or str(folder / STORAGE_FILE)
    name = config.study_name or f"slimkit-{digest}"
    study = open_study(config, storage, name, digest, space)
    proxy_deadline = start + 0.5 * config.budget_s if config.budget_s else None
    _run(ctx, config, storage, name, space, proxy_deadline)
    trials = finished(study)
    sections["trials"] = [_trial_row(t) for t in trials]
    sections["proxy_front"] = [t.number for t in pareto(trials, lambda t: tuple(t.values))]
    final = Finalists(model, space, config, folder / "candidates", data, train, metric,
                      deadline)
    order, feasible = candidates(trials)
    if feasible:  # cheapest first: bisection finds the cheapest that holds
        final.bisect(order, config.first_round_finalists, "first")
    else:  # nothing feasible by the proxy: the smallest drops first
        final.in_order(order, config.first_round_finalists, "first")
    round_deadline = start + 0.75 * config.budget_s if config.budget_s else None
    sections["second_round"] = _second_round(ctx, final, (storage, name, digest), trials,
                                             round_deadline)
    if not any(r["met_budget"] for r in final.rows):
        _fallback(final, trials)
    original = final.measure()
    rows = final.rows
    best, met = choose(rows, config.objective)
    front = pareto(rows, lambda r: (r["p50_ms"], r["bytes"], r["drop"]))
    sections["original"] = {"p50_ms": original["p50_ms"], "metric": ctx.scorer.baseline}
    sections["finalists"] = [_plain(r) for r in rows]
    sections["front"] = [r["trial"] for r in front]
    sections["best"] = _plain(best)
    sections["seconds"] = round(time.monotonic() - start, 1)
    if met and config.objective.value == "latency" and best["p50_ms"] >= original["p50_ms"]:
        sections["warnings"].append(
            f"the best candidate that meets the budget is not faster than the original here "
            f"({original['p50_ms'] / best['p50_ms']:.2f}x, measured side by side): for latency "
            f"on this machine, keep the original (the candidate is written for its size)")
        log.warning(sections["warnings"][-1])
    if not met:
        sections["warnings"].append(
            f"no candidate met the budget (max drop {config.max_drop}); the closest one "
            f"(drop {best['drop']}) was written")
    recipe = Recipe.from_dict(best["recipe"])
    shutil.copyfile(best["path"], folder / f".{MODEL_FILE}.tmp")
    (folder / f".{MODEL_FILE}.tmp").replace(folder / MODEL_FILE)
    write_text_atomic(folder / RECIPE_FILE, recipe.to_yaml())
    write_text_atomic(folder / REPORT_FILE, json.dumps(sections, indent=2, default=str) + "\n")
    return SearchResult(folder, best["model"].with_onnx(folder / MODEL_FILE), recipe, met,
                        [_plain(r) for r in front], sections)


def int8_speed(config: SearchConfig) -> float:
    """The proxy's int8 speed-up: as configured, or this CPU's measured integer/float GEMM
    ratio (int8 pays about 4x with VNNI, nothing on AVX2 without it), at least 1."""
    if config.int8_speed is not None:
        return config.int8_speed
    from slimkit.quantize.preflight import gemm_ratios

    return max(1.0, round(gemm_ratios()[0], 2))


def report_objectives(config: SearchConfig) -> list[dict[str, Any]]:
    """The two axes of the proxy trials' Pareto front, named as the trial rows' keys (the
    HTML report draws ``trials`` on them)."""
    cost = "bytes" if config.objective.value == "size" else "macs"
    label = ("weight bytes, fraction of the original" if cost == "bytes" else
             "MACs, fraction of the original (int8 layers at 1/int8_speed)")
    return [{"name": cost, "label": label, "minimize": True},
            {"name": "drop", "label": "metric drop (proxy, before fine-tuning)",
             "minimize": True}]


def _noise(model: Model, data: Dataset, metric: UserMetric | None, config: SearchConfig,
           warnings: list[str]) -> dict[str, Any]:
    scorer = Scorer(model, data, metric)
    std = scorer.noise(seed=config.seed)
    if config.max_drop < 2 * std:
        warnings.append(
            f"the budget (max drop {config.max_drop}) is within the evaluation noise of the "
            f"original model ({scorer.name} {scorer.baseline:.4f} +- {std:.4f} over bootstrap "
            f"resamples of {len(data)} examples): use more evaluation data or a larger budget")
        log.warning(warnings[-1])
    return {"metric": scorer.name, "value": scorer.baseline, "bootstrap_std": round(std, 6),
            "examples": len(data)}


def _prepare(model: Model, data: Dataset, train: Dataset, metric: UserMetric | None,
             config: SearchConfig, digest: str) -> tuple[TrialContext, SearchSpace,
                                                         dict[str, Any]]:
    """The trial context, the sensitivity scan (cached) and the space it bounds. Without a
    proxy limit (the finalists are fine-tuned) no group's ratios are bounded, so the pruning
    part of the scan is skipped: what a group loses before fine-tuning says little about what
    it loses after."""
    from slimkit.io import cache_dir
    from slimkit.search.sensitivity import allowed_ratios, most_sensitive, scan

    scorer = Scorer(model, data.take(config.eval_examples), metric)
    base = layer_costs(model, set())
    layers = quantizable_modules(model) if config.quantize else []
    groups = channel_groups(model)
    # the scan prunes one group at a time through the context's space: it must know every group
    every = SearchSpace(tuple(GroupChoice(key, channels, config.ratios)
                              for key, channels in groups), (), tuple(layers), config.quantize)
    ctx = TrialContext(model, scorer, every, config.seed, config.trial_threads,
                       int8_speed(config),
                       base["macs"], base["bytes"], train, config.bn_batches)
    limit = config.proxy_limit
    scanned = groups if limit is not None else []
    sens = scan(ctx, scanned, config.ratios, layers, cache_dir() / "search", digest)
    choices = tuple(GroupChoice(key, channels, config.ratios if limit is None else
                                allowed_ratios(sens["prune"][key], config.ratios, limit))
                    for key, channels in groups)
    space = SearchSpace(choices, most_sensitive(sens["int8"], config.quant_layer_choices),
                        tuple(layers), config.quantize, int8_mode(model))
    ctx.space = space
    return ctx, space, sens


def _second_round(ctx: TrialContext, final: Finalists, study_id: tuple[str, str, str],
                  trials: list[Any], deadline: float | None) -> dict[str, Any]:
    """Walk down from the cheapest finalist that held, under the drop limit the first
    finalists calibrated; the walk's points are fine-tuned in bisection order, cheapest
    first. See ``search/refine.py``."""
    from slimkit.search.refine import (
        best_step,
        calibrated_limit,
        known_results,
        neighbours,
        round_config,
    )
    from slimkit.search.study import objective_values

    config, space = final.config, final.space
    rest = config.finalists - config.first_round_finalists
    limit = calibrated_limit(final.rows)
    if config.second_round_steps == 0 or rest == 0 or limit is None:
        why = ("no second-round steps" if config.second_round_steps == 0 else
               "no finalist left for it" if rest == 0 else
               "no first-round finalist met the budget")
        return {"skipped": why}
    storage, name, digest = study_id
    name = f"{name}-round2-{round(limit, 6)}"

    def cost(result: dict[str, float]) -> float:
        return objective_values(config, result, single=True)[0]

    start = min((r for r in final.rows if r["met_budget"]), key=lambda r: cost(r["proxy"]))
    current = (dict(start["params"]), cost(start["proxy"]), float(start["proxy"]["drop"]))
    known = known_results(trials)
    path: list[Any] = []
    done: list[Any] = []
    for _ in range(config.second_round_steps):
        steps, done = _evaluate_step(ctx, round_config(config, limit),
                                     (storage, name, digest), neighbours(current[0], space),
                                     deadline, known)
        if not steps:
            break
        i = best_step(current[1:], [(t.values[0], t.user_attrs["drop"]) for t in steps], limit)
        if i is None:
            break
        path.append(steps[i])
        current = (dict(steps[i].params), steps[i].values[0], steps[i].user_attrs["drop"])
    offset = len(trials)
    final.bisect(path[::-1], rest, "second", offset)
    return {"limit": round(limit, 6), "offset": offset, "start": start["trial"],
            "path": [offset + t.number for t in path],
            "trials": [_trial_row(t) for t in done]}


def _fallback(final: Finalists, trials: list[Any]) -> None:
    """No finalist held: the cheapest point that held the budget already as a proxy (no
    fine-tuning to count on; int8 alone or mild pruning) gets one more try, so a model that
    meets the budget is returned when one was seen."""
    from slimkit.search.refine import params_key

    tried = {params_key(r["params"]) for r in final.rows}
    safe = sorted((t for t in trials if t.user_attrs.get("drop", 1e9) <= final.config.max_drop
                   and params_key(t.params) not in tried),
                  key=lambda t: (t.values[0], t.user_attrs["drop"], t.number))
    final.in_order(safe, 1, "fallback")


def _evaluate_step(ctx: TrialContext, config: SearchConfig, study_id: tuple[str, str, str],
                   points: list[dict[str, Any]], deadline: float | None,
                   known: dict[str, dict[str, float]]) -> tuple[list[Any], list[Any]]:
    """Proxy results of ``points`` (as trials of the second round's study; stored ones are
    not evaluated again) and every finished trial of that study; no results when the
    deadline stopped the step."""
    from slimkit.search.refine import params_key
    from slimkit.search.study import finished, open_study

    if not points:
        return [], []
    storage, name, digest = study_id
    study = open_study(config, storage, name, digest, ctx.space, seeds=[], single=True)
    for point in points:
        study.enqueue_trial(point, skip_if_exists=True)
    config = replace(config, trials=len(study.get_trials(deepcopy=False)))
    _run(ctx, config, storage, name, ctx.space, deadline, single=True, known=known)
    done = finished(study)
    by_params = {params_key(t.params): t for t in done}
    steps = [by_params.get(params_key(p)) for p in points]
    return ([] if any(t is None for t in steps) else steps), done


def _run(ctx: TrialContext, config: SearchConfig, storage: str, name: str, space: SearchSpace,
         deadline: float | None, single: bool = False,
         known: dict[str, dict[str, float]] | None = None) -> None:
    from slimkit.search.executors import EXECUTORS
    from slimkit.search.study import run_trials

    executor = EXECUTORS.get(config.executor.value)(ctx, config.workers, config.ray_address)
    try:
        run_trials(config, storage, name, space, _reusing(executor.map, known or {}),
                   deadline, single)
    finally:
        executor.close()


def _reusing(evaluate: Any, known: dict[str, dict[str, float]]) -> Any:
    """``evaluate`` that answers points already evaluated from ``known``."""
    from slimkit.search.refine import params_key

    def run(points: list[dict[str, Any]]) -> list[dict[str, float]]:
        keys = [params_key(p) for p in points]
        todo = [p for p, k in zip(points, keys, strict=True) if k not in known]
        fresh = iter(evaluate(todo) if todo else [])
        return [known[k] if k in known else next(fresh) for k in keys]

    return run


def _trial_row(trial: Any) -> dict[str, Any]:
    return {"number": trial.number, "params": dict(trial.params), "values": list(trial.values),
            **{k: v for k, v in trial.user_attrs.items()}}


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "model"}


