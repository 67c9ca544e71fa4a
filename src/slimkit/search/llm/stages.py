"""The two stages of the causal-LM search. The screen judges a candidate by the perplexity of
its torch fake-quantized copy (exactly the weights the export writes) on a few evaluation
windows, with no export; the build turns a finalist into a generation folder through the
technique verbs (``quantize_weights``, ``quantize_w8a8``, ``export_for_generation``), each of
which verifies its graph."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from slimkit.llm.evaluate import PerplexityConfig, compare
from slimkit.model import Model
from slimkit.search.llm.config import LLMSearchConfig
from slimkit.search.llm.space import Candidate, cost, linear_shapes

log = logging.getLogger(__name__)


class Stages:
    """Pruned variants (made once each), screened scores (once per candidate) and the W8A8
    folders the screen had to build anyway (reused by the build)."""

    def __init__(self, model: Model, config: LLMSearchConfig, calib: str, scratch: Path,
                 evaluation: str) -> None:
        self.model, self.config, self.calib, self.scratch = model, config, calib, scratch
        # screened on the evaluation text after the finalists' span: the finalists are
        # judged on tokens the screen never chose on
        self.screen_eval = PerplexityConfig(evaluation, config.screen_window,
                                            config.screen_window,
                                            config.screen_window * config.screen_windows,
                                            skip_tokens=config.eval_window * config.eval_windows)
        self.variants: dict[tuple[float, float], tuple[Model, dict[str, Any]]] = {}
        self.scores: dict[Candidate, dict[str, Any]] = {}
        self.folders: dict[Candidate, Path] = {}
        self.baseline = compare(model, None, self.screen_eval, threads=config.threads)

    # -- structural variants -------------------------------------------------------------
    def variant(self, depth: float, width: float) -> tuple[Model, dict[str, Any]]:
        """The model pruned by depth then width (and distilled), made once."""
        key = (depth, width)
        if key not in self.variants:
            self.variants[key] = self._prune(depth, width)
        return self.variants[key]

    def _prune(self, depth: float, width: float) -> tuple[Model, dict[str, Any]]:
        from slimkit.llm.prune import LLMPruneConfig, LLMPruneMethod, prune_llm

        model, start = self.model, time.process_time()
        info: dict[str, Any] = {"depth": depth, "width": width}
        cfg = self.config
        for method, ratio in (("depth", depth), ("width", width)):
            if ratio:
                model = prune_llm(model, LLMPruneConfig(
                    method=LLMPruneMethod(method), ratio=ratio,
                    windows=min(cfg.calibration_windows, 8), window=cfg.calibration_window),
                    calib=self.calib).model
        if (depth or width) and cfg.distill_steps:
            from slimkit.llm.distill import LLMDistillConfig, distill_llm

            result = distill_llm(model, self.model, self.calib, LLMDistillConfig(
                steps=cfg.distill_steps, window=min(256, cfg.calibration_window),
                threads=cfg.threads, seed=cfg.seed))
            model, info["distill"] = result.model, {"steps": cfg.distill_steps}
        info["cpu_s"] = round(time.process_time() - start, 1)
        return model, info

    # -- stage (a): the screen -----------------------------------------------------------
    def screen(self, candidate: Candidate) -> dict[str, Any]:
        """Perplexity increase and KL of the candidate on the screen windows, its bytes."""
        if candidate in self.scores:
            return self.scores[candidate]
        start = time.perf_counter()
        variant, _ = self.variant(*candidate.structural)
        from slimkit.llm.load import hf_module

        shapes = linear_shapes(hf_module(variant))
        if candidate.precision == "w8a8":
            folder = self._w8a8(variant, candidate, self.scratch / "screen" / candidate.label)
            measured = compare(_load(folder), self.model, self.screen_eval,
                               runtime="onnxruntime", threads=self.config.threads)
        else:
            judged = variant if candidate.precision == "fp32" else _fake(
                variant, self._weight_config(candidate), self.calib)
            measured = compare(judged, self.model, self.screen_eval, threads=self.config.threads)
        row = {**cost(candidate, shapes), **_quality(measured, self.baseline),
               "seconds": round(time.perf_counter() - start, 1)}
        self.scores[candidate] = row
        return row

    # -- stage (b): the build ------------------------------------------------------------
    def build(self, candidate: Candidate, folder: Path) -> Path:
        """The candidate's verified generation folder at ``folder``."""
        variant, _ = self.variant(*candidate.structural)
        if candidate.precision == "w8a8":
            return self._w8a8(variant, candidate, folder)
        if candidate.precision == "fp32":
            from slimkit.llm.export import export_for_generation

            return export_for_generation(variant, folder).folder
        from slimkit.llm.wquant import quantize_weights

        return quantize_weights(variant, folder, self._weight_config(candidate),
                                self.calib).folder

    def _weight_config(self, candidate: Candidate) -> Any:
        from slimkit.llm.wquant import AdvancedWeightQuantConfig, WeightQuantConfig

        cfg = self.config
        advanced = AdvancedWeightQuantConfig(
            calibration_windows=cfg.calibration_windows,
            calibration_window=cfg.calibration_window, ppl_windows=1,
            ppl_window=cfg.screen_window, speed_rounds=0)
        if candidate.precision == "int8":
            return WeightQuantConfig(mode="int8", calibration=self.calib, threads=cfg.threads,
                                     seed=cfg.seed, advanced=advanced)
        return WeightQuantConfig(mode="int4", method=candidate.method,
                                 block_size=candidate.block, lm_head=candidate.lm_head,
                                 keep_8bit=candidate.keep_8bit, calibration=self.calib,
                                 threads=cfg.threads, seed=cfg.seed, advanced=advanced)

    def _w8a8(self, variant: Model, candidate: Candidate, folder: Path) -> Path:
        """W8A8 is screened on its exported graph (its activation quantization has no cheap
        torch twin here); the folder is kept for the build."""
        if candidate in self.folders:
            if folder != self.folders[candidate]:
                shutil.copytree(self.folders[candidate], folder)
            return folder
        from slimkit.llm.w8a8 import AdvancedW8A8, W8A8Config, quantize_w8a8

        cfg = self.config
        tokens = cfg.calibration_windows * cfg.calibration_window
        w8 = W8A8Config(evaluation=self.screen_eval, speed=None, advanced=AdvancedW8A8(
            calibration_tokens=tokens, calibration_window=cfg.calibration_window,
            search_tokens=min(tokens, 1024)))
        folder.parent.mkdir(parents=True, exist_ok=True)
        quantize_w8a8(variant, folder, w8, self.calib, threads=cfg.threads)
        self.folders[candidate] = folder
        return folder


def _fake(model: Model, config: Any, calib: str) -> Model:
    from slimkit.llm.wquant import fake_quantize

    return fake_quantize(model, config, calib)


def _load(folder: Path) -> Model:
    from slimkit.llm.load import load_generation_folder

    return load_generation_folder(folder)


def _quality(measured: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    ppl = float(measured["perplexity"])
    return {"ppl": round(ppl, 4), "ppl_increase": round(ppl / baseline["perplexity"] - 1, 5),
            "kl": round(float(measured.get("kl_mean", 0.0)), 6)}
