"""Stage (b): the finalists (the screen's estimated front under the budget, and the best
single technique) exported through the verbs and measured side by side with the fp32 graph on
held-out text: perplexity, KL, decode tokens/s, prefill ms, bytes on disk."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import VerificationError
from slimkit.llm.evaluate import PerplexityConfig, compare
from slimkit.search.finalists import pareto
from slimkit.search.llm.config import LLMSearchConfig
from slimkit.search.llm.screen import estimate_tok_s
from slimkit.search.llm.space import Candidate, cost, linear_shapes

log = logging.getLogger(__name__)
SINGLES = 2  # single techniques measured beside the composed finalists


def pick_finalists(trials: list[dict[str, Any]], config: LLMSearchConfig) -> dict[str, Any]:
    """The front of the feasible trials (bytes per token, budget measure), fewest bytes first,
    and the two feasible single techniques reading the fewest bytes; without a feasible trial,
    the trials closest to the budget."""
    measure, _ = config.budget
    feasible = [t for t in trials if t["feasible"] and t["precision"] != "fp32"]
    if feasible:
        front = pareto(feasible, lambda t: (t["bytes_per_token"], t[measure]))
        rows = sorted(front, key=lambda t: t["bytes_per_token"])[:config.finalists]
        singles = sorted((t for t in feasible if t["single"]),
                         key=lambda t: t["bytes_per_token"])
    else:
        rows = sorted(trials, key=lambda t: t[measure])[:config.finalists]
        singles = sorted((t for t in trials if t["single"]), key=lambda t: t[measure])
    for single in singles[:SINGLES]:  # a second one in case the first misses when measured
        if all(r["label"] != single["label"] for r in rows):
            rows.append(single)
    return {"rows": rows, "single": singles[0] if singles else None}


def measure_finalists(stages: Any, chosen: dict[str, Any], folder: Path, evaluation: str,
                      trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Build every finalist and the fp32 graph, measure them side by side; the measured rows,
    the best under the budget, the best single technique, the refitted speed line (the
    trials' estimated tokens/s are re-costed with it)."""
    config: LLMSearchConfig = stages.config
    measure, limit = config.budget
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = stages.build(Candidate("fp32"), folder / "fp32")
    built, warnings = {}, []
    for trial in chosen["rows"]:
        try:
            built[trial["label"]] = (trial, stages.build(trial["candidate"],
                                                         folder / trial["label"]))
        except VerificationError as exc:  # NaN logits, graph mismatch: dropped, said
            warnings.append(f"finalist {trial['label']} failed its verification: {exc}")
    if not built:
        raise VerificationError("no finalist could be exported and verified; " +
                                "; ".join(warnings))
    evaluation_config = PerplexityConfig(evaluation, config.eval_window, config.eval_window,
                                         config.eval_window * config.eval_windows)
    original = {**_quality(stages, fp32, evaluation_config), **_size(fp32)}
    speed = _speed(stages, {"fp32": fp32, **{k: f for k, (_, f) in built.items()}}, evaluation)
    original.update(speed.get("fp32", {}))
    rows = []
    for label, (trial, path) in built.items():
        quality = _quality(stages, path, evaluation_config)
        quality["ppl_increase"] = round(quality["ppl"] / original["ppl"] - 1, 5)
        row = {"label": label, "trial": trial["trial"], "single": trial["single"],
               "bytes_per_token": trial["bytes_per_token"], **quality, **_size(path),
               **speed.get(label, {}), "folder": path}
        row["drop"] = row[measure]
        row["met_budget"] = bool(row[measure] <= limit)
        if row.get("decode_tok_s"):
            row["p50_ms"] = round(1000 / row["decode_tok_s"], 3)
        rows.append(row)
    fit = _fit(rows, original, stages)
    if fit is not None:
        for trial in trials:
            trial["tokens_per_s"] = estimate_tok_s(trial["bytes_per_token"], fit)
    best = _best(rows, measure)
    singles = [r for r in rows if r["single"]]
    single = _best(singles, measure) if singles else None
    front = pareto(rows, lambda r: (-(r.get("decode_tok_s") or 0), r["size_bytes"], r[measure]))
    for row in rows:
        row["chosen"] = row is best
    return {"rows": rows, "best": best, "single": single, "original": original,
            "front": [r["label"] for r in front], "warnings": warnings,
            "fit": None if fit is None else {"overhead_ms": round(fit[0], 4),
                                             "ms_per_mb": round(fit[1] * 1e6, 5)}}


def _best(rows: list[dict[str, Any]], measure: str) -> dict[str, Any]:
    met = [r for r in rows if r["met_budget"]]
    if not met:
        return min(rows, key=lambda r: r[measure])
    if all(r.get("decode_tok_s") for r in met):
        return max(met, key=lambda r: r["decode_tok_s"])
    return min(met, key=lambda r: r["size_bytes"])


def _quality(stages: Any, path: Path, evaluation: PerplexityConfig) -> dict[str, Any]:
    from slimkit.llm.load import load_generation_folder

    result = compare(load_generation_folder(path), stages.model, evaluation,
                     runtime="onnxruntime", threads=stages.config.threads)
    return {"ppl": round(float(result["perplexity"]), 4),
            "kl": round(float(result["kl_mean"]), 6),
            "top1_agreement": round(float(result["top1_agreement"]), 4)}


def _size(path: Path) -> dict[str, Any]:
    from slimkit.llm.wquant.measure import folder_bytes

    return {"size_bytes": folder_bytes(path)}


def _speed(stages: Any, folders: dict[str, Path], evaluation: str) -> dict[str, Any]:
    config: LLMSearchConfig = stages.config
    if not config.speed_rounds:
        return {}
    from slimkit.llm.w8a8.measure import prompt_ids
    from slimkit.llm.wquant.measure import side_by_side

    prompt = prompt_ids(stages.model, evaluation, config.speed_prompt)
    return side_by_side(folders, prompt, config.speed_new_tokens, config.speed_rounds,
                        config.threads)


def _fit(rows: list[dict[str, Any]], original: dict[str, Any],
         stages: Any) -> tuple[float, float] | None:
    """Least squares of measured ms per token on bytes per token (fp32 included); None when
    fewer than two distinct points or a slope that is not positive (then the prior stays)."""
    from slimkit.llm.load import hf_module

    fp32_bytes = cost(Candidate("fp32"), linear_shapes(hf_module(stages.model)))
    points = [(r["bytes_per_token"], 1000 / r["decode_tok_s"]) for r in rows
              if r.get("decode_tok_s")]
    if original.get("decode_tok_s"):
        points.append((fp32_bytes["bytes_per_token"], 1000 / original["decode_tok_s"]))
    if len({p[0] for p in points}) < 2:
        return None
    x, y = np.array(points).T
    slope, intercept = np.polyfit(x, y, 1)
    if slope <= 0:
        return None
    return max(float(intercept), 0.0), float(slope)
