"""``search_llm``: the fastest causal LM under a perplexity (or KL) budget, composed from the
technique verbs (weight-only int4/int8, W8A8, depth/width pruning + distillation).

Two stages make it affordable. (a) A screen of many candidates by the perplexity of their
torch fake-quantized copy on a few evaluation windows (no export), each costed by the bytes it
reads per decoded token (decode on CPU is memory-bound). (b) The finalists (the screen's front
under the budget, and the best single technique) are exported through the verbs, which verify
their graphs, and measured side by side with the fp32 model on held-out text: perplexity,
decode tokens/s, prefill ms, size. The estimate's line (ms per token against bytes per token)
is refitted on the measured points and the trials re-costed with it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slimkit.errors import DataError, InputError, OutputPathError
from slimkit.io import write_text_atomic
from slimkit.model import Model
from slimkit.search.llm.config import CALIBRATION_TEXT, EVALUATION_TEXT, LLMSearchConfig
from slimkit.search.llm.measure import measure_finalists, pick_finalists
from slimkit.search.llm.screen import run_screen

log = logging.getLogger(__name__)
SEARCH_FILE = "search.json"
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class LLMSearchResult:
    folder: Path
    model: Model  # a handle on the written generation folder
    met_budget: bool
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "met_budget": self.met_budget, **self.report}


def search_llm(model: Model, output_folder: str | Path, config: LLMSearchConfig | None = None,
               calib: str | None = None, evaluation: str = EVALUATION_TEXT) -> LLMSearchResult:
    """Search precisions (and optionally depth/width pruning) of a causal LM under a budget
    and write the chosen generation folder, ``search.json`` and ``report.json``.

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> m = load_causal_lm(tiny_llama_folder(root))
        >>> cfg = LLMSearchConfig(max_ppl_increase=0.5, precisions=("int8", "fp32"),
        ...     screen_windows=1, screen_window=64, eval_windows=1, eval_window=64,
        ...     calibration_windows=1, calibration_window=64, speed_rounds=0, finalists=1)
        >>> r = search_llm(m, root / "best", cfg)
        >>> r.met_budget, (r.folder / "search.json").is_file()
        (True, True)
    """
    config = _fit_context(config or LLMSearchConfig(), model)
    calib = calib or CALIBRATION_TEXT
    out = _check_output(Path(output_folder).expanduser())
    _check_text(model, calib, config.calibration_window)
    start, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix=".slimkit-llmsearch-", dir=out.parent) as tmp:
        from slimkit.search.llm.stages import Stages

        stages = Stages(model, config, calib, Path(tmp), evaluation)
        _check_budget(stages.baseline["perplexity"], config)
        trials, how = run_screen(stages, config)
        chosen = pick_finalists(trials, config)
        measured = measure_finalists(stages, chosen, Path(tmp) / "candidates", evaluation,
                                     trials)
        section = _section(config, trials, measured, how, start, cpu)
        section["variants"] = [info for _, info in stages.variants.values()]
        best = measured["best"]
        final = Path(tmp) / "final"
        shutil.copytree(best["folder"], final)
        text = json.dumps(section, indent=2, default=str) + "\n"
        write_text_atomic(final / SEARCH_FILE, text)
        from slimkit.bench.environment import environment

        write_text_atomic(final / REPORT_FILE, json.dumps(
            {"format": "slimkit-report", "version": 1, "title": f"LLM search: {model.name}",
             "sections": {"search": section, "comparison": _comparison(section)},
             "environment": environment(), "seed": config.seed}, indent=2, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        final.rename(out)
    from slimkit.llm.load import load_generation_folder

    met = bool(section["met_budget"])
    if not met:
        log.warning(section["warnings"][-1])
    return LLMSearchResult(out, load_generation_folder(out, name=f"{model.name}-searched"), met,
                           section)


def report_objectives(config: LLMSearchConfig) -> list[dict[str, Any]]:
    """The screen's two axes, named as the trial rows' keys (the HTML report draws them)."""
    measure, _ = config.budget
    label = ("perplexity increase (screen: fake-quant, few windows)" if measure == "ppl_increase"
             else "mean KL from fp32, nats/token (screen)")
    return [{"name": "tokens_per_s", "label": "decode tokens/s (estimated from bytes read "
             "per token, fitted on the measured finalists)", "minimize": False},
            {"name": measure, "label": label, "minimize": True}]


def _section(config: LLMSearchConfig, trials: list[dict[str, Any]],
             measured: dict[str, Any], how: str, start: float, cpu: float) -> dict[str, Any]:
    measure, limit = config.budget
    best, single = measured["best"], measured["single"]
    warnings = list(measured["warnings"])
    if not best["met_budget"]:
        warnings.append(f"no candidate met the budget ({measure} <= {limit:g}) on the held-out "
                        f"text; the closest one ({best['label']}, {measure} "
                        f"{best[measure]:.4g}) was written")
    verdict = None
    if single is not None and best.get("decode_tok_s") and single.get("decode_tok_s"):
        verdict = {"searched": best["label"], "single": single["label"],
                   "decode_ratio": round(best["decode_tok_s"] / single["decode_tok_s"], 3),
                   "beats_single": best["decode_tok_s"] > single["decode_tok_s"],
                   "chosen_is_single": best["label"] == single["label"]}
    return {"kind": "search", "config": config.to_dict(), "seed": config.seed,
            "budget": {"measure": measure, "limit": limit},
            "objectives": report_objectives(config), "screen": how,
            "trials": [{k: v for k, v in t.items() if k != "candidate"} for t in trials],
            "front": measured["front"], "speed_fit": measured["fit"],
            "original": measured["original"],
            "finalists": [_plain(r) for r in measured["rows"]],
            "best": _plain(best), "best_single": _plain(single) if single else None,
            "versus_single": verdict, "met_budget": best["met_budget"],
            "warnings": warnings, "seconds": round(time.perf_counter() - start, 1),
            "cpu_minutes": round((time.process_time() - cpu) / 60, 2)}


def _comparison(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's before/after rows: fp32, the best single technique, the searched model
    (decode ms per token as p50_ms, decode tokens/s as throughput, perplexity as metric)."""
    rows = [("fp32", section["original"])]
    single, best = section["best_single"], section["best"]
    if single is not None and single["label"] != best["label"]:
        rows.append((f"best single: {single['label']}", single))
    rows.append((f"searched: {best['label']}", best))
    out = []
    for variant, r in rows:
        row = {"variant": variant, "size_bytes": r["size_bytes"], "metric": r["ppl"]}
        if r.get("decode_tok_s"):
            row.update(p50_ms=round(1000 / r["decode_tok_s"], 3), throughput=r["decode_tok_s"])
        out.append(row)
    return out


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "folder"}


def _fit_context(config: LLMSearchConfig, model: Model) -> LLMSearchConfig:
    """Windows and the timed prompt no longer than the model's context (a small model)."""
    context = int(model.meta.get("context_length") or 0)
    names = ("screen_window", "eval_window", "calibration_window")
    if not context or all(getattr(config, n) <= context for n in names) \
            and config.speed_prompt + config.speed_new_tokens <= context:
        return config
    log.warning("the model's context is %d tokens: windows and the timed prompt shortened",
                context)
    shorter = {n: min(getattr(config, n), context) for n in names}
    new_tokens = min(config.speed_new_tokens, max(1, context // 4))
    return replace(config, **shorter, speed_new_tokens=new_tokens,
                   speed_prompt=min(config.speed_prompt, context - new_tokens))


def _check_budget(ppl: float, config: LLMSearchConfig) -> None:
    if config.max_perplexity is not None and ppl > config.max_perplexity:
        raise InputError(f"the original model already misses the budget: perplexity "
                         f"{ppl:.3f} > max_perplexity {config.max_perplexity:g} on the "
                         "evaluation text; raise the budget")


def _check_text(model: Model, calib: str, window: int) -> None:
    from slimkit.llm.evaluate import token_ids
    from slimkit.llm.text import load_text
    from slimkit.llm.wquant.calibrate import check_calibration_text

    check_calibration_text(calib)  # never the text the candidates are judged on

    if model.tokenizer is None:
        raise InputError(f"'{model.source}' has no tokenizer; the search measures perplexity "
                         "on text")
    tokens = len(token_ids(model.tokenizer, load_text(calib).text, window))
    if tokens < window:
        raise DataError(f"the calibration text '{calib}' has {tokens} tokens, fewer than one "
                        f"window of {window}; give a longer text or a smaller "
                        "calibration_window")


def _check_output(out: Path) -> Path:
    if out.exists() and not (out.is_dir() and (not any(out.iterdir())
                                               or (out / SEARCH_FILE).is_file())):
        raise OutputPathError(f"'{out}' exists and is not an empty folder or an earlier "
                              "search's output; choose a new folder")
    if not out.parent.is_dir():
        raise OutputPathError(f"cannot write '{out}': folder '{out.parent}' does not exist")
    return out
