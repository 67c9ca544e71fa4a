"""``slimkit.compress``: run a recipe's stages on a copy of the model, export the result (when
no stage did), verify it against the original on the evaluation data, measure its speed beside
the original in ONNX Runtime, and write the model, the report and the recipe atomically."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.data import Dataset, synthetic
from slimkit.errors import VerificationError
from slimkit.evaluate.metrics import UserMetric
from slimkit.io import check_output_path, prepare_output_folder, write_text_atomic
from slimkit.model import Model
from slimkit.recipe.recipe import Recipe
from slimkit.recipe.stages import STAGES, PipelineState

MODEL_FILE = "model.onnx"
REPORT_FILE = "report.json"
RECIPE_FILE = "recipe.yaml"


@dataclass
class CompressResult:
    """The compressed model (a handle on ``folder/model.onnx``) and the report."""

    folder: Path
    model: Model
    sections: dict[str, Any] = field(default_factory=dict)
    met_budget: bool | None = None  # None when the recipe sets no max_drop

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "met_budget": self.met_budget, **self.sections}


def compress(model: Model, recipe: Recipe, output: str | Path, data: Dataset | None = None,
             train: Dataset | None = None, *, metric: UserMetric | None = None,
             measure: bool = True, threads: int = 1) -> CompressResult:
    """Run ``recipe`` on ``model``; write ``output/`` (model.onnx, report.json, recipe.yaml).

    Args:
        model: the model to compress (not modified).
        recipe: the stages (see ``Recipe`` / ``load_recipe``).
        output: a folder (created when its parent exists).
        data: evaluation data (labels give accuracy); synthetic inputs when absent.
        train: data for fine-tuning, calibration and data-driven importance; ``data`` if None.
        metric: a user metric ``(outputs, labels) -> float``, higher is better.
        measure: benchmark original vs compressed in ONNX Runtime (1 thread, batch 1).
        threads: threads for that measurement.

    Example:
        >>> import tempfile
        >>> from slimkit.testing import tiny_model
        >>> r = compress(tiny_model("cnn"), Recipe.from_dict({"stages": [
        ...     {"prune": {"ratio": 0.5, "round_to": 2}}]}), tempfile.mkdtemp() + "/out",
        ...     measure=False)
        >>> r.model.onnx_path.name, r.sections["verification"]["metric"]
        ('model.onnx', 'cosine_mean')
    """
    from slimkit.recipe.metric import Scorer

    folder = prepare_output_folder(output)
    eval_data = data if data is not None else synthetic(model.inputs, 32, seed=0)
    scorer = Scorer(model, eval_data, metric)
    sections: dict[str, Any] = {"recipe": recipe.to_dict(), "model": model.describe(),
                                "stages": []}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slimkit-compress-") as tmp:
        state = PipelineState(model, model, train if train is not None else data, data,
                              Path(tmp), metric, threads)
        for i, stage in enumerate(recipe.stages):
            t0 = time.perf_counter()
            report = STAGES.get(stage.name).run(stage.config, state)
            sections["stages"].append({"stage": stage.name, "index": i,
                                       "seconds": round(time.perf_counter() - t0, 2), **report})
        final = state.model
        if final.module is not None:
            from slimkit.export.onnx import export_onnx

            exported = export_onnx(final, state.scratch(MODEL_FILE), sample=eval_data.take(64))
            sections["export"] = exported.to_dict()
            final = exported.model
        sections["verification"] = verify(scorer, final, recipe.max_drop)
        if measure:
            sections["latency"] = measure_side_by_side([model, final], threads)
        out_model = folder / MODEL_FILE
        shutil.copyfile(final.onnx_path or "", Path(tmp) / "final.onnx")
        check_output_path(out_model)
        shutil.move(str(Path(tmp) / "final.onnx"), out_model)
    sections["size"] = {"onnx_bytes": out_model.stat().st_size}
    sections["seconds"] = round(time.perf_counter() - start, 2)
    met = sections["verification"].get("met_budget")
    write_text_atomic(folder / RECIPE_FILE, recipe.to_yaml())
    write_text_atomic(folder / REPORT_FILE, json.dumps(sections, indent=2, default=str) + "\n")
    return CompressResult(folder, final.with_onnx(out_model), sections, met)


def verify(scorer: Any, final: Model, max_drop: float | None) -> dict[str, Any]:
    """The compressed model's metric against the original's on the same data; NaN outputs or
    changed output shapes are errors."""
    import numpy as np

    outputs = scorer.outputs(final)
    if outputs.shape != scorer.reference.shape:
        raise VerificationError(f"the compressed model gives outputs {outputs.shape}, the "
                                f"original {scorer.reference.shape}")
    if not np.all(np.isfinite(outputs)):
        raise VerificationError("the compressed model gives NaN or infinite outputs")
    value = scorer.score_outputs(outputs)
    drop = scorer.baseline - value
    out = {"metric": scorer.name, "original": round(scorer.baseline, 6),
           "compressed": round(value, 6), "drop": round(drop, 6),
           "examples": len(scorer.data), "runtime": "onnxruntime"}
    if max_drop is not None:
        out["max_drop"] = max_drop
        out["met_budget"] = bool(drop <= max_drop + 1e-12)
    return out


def measure_side_by_side(models: list[Model], threads: int = 1,
                         rounds: int = 5) -> list[dict[str, Any]]:
    """ONNX Runtime latency (batch 1) of ``models``, interleaved in one run; speed-up is
    relative to the first."""
    from dataclasses import asdict

    from slimkit.bench.core import BenchConfig, benchmark

    result = benchmark(models, BenchConfig(runtimes=("onnxruntime",), threads=(threads,),
                                           batches=(1,), rounds=rounds, round_seconds=0.2))
    return [{k: v for k, v in asdict(row).items()
             if k in ("model", "p50_ms", "p90_ms", "speedup", "other_cpu_cores")}
            for row in result.rows]
