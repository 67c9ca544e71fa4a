"""slimkit: make trained neural networks smaller and faster, with measured and verified reports.

The public API is imported lazily, so ``import slimkit`` stays quick and never imports
onnxruntime, transformers or optuna.

Example:
    >>> import slimkit
    >>> model = slimkit.load_model("builtin:resnet18-cifar")
    >>> model.framework
    'torch'
"""

from __future__ import annotations

from slimkit._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "load_model": "slimkit.load",
    "Model": "slimkit.model",
    "TensorSpec": "slimkit.model",
    "Task": "slimkit.model",
    "Dataset": "slimkit.data",
    "load_data": "slimkit.data",
    "export_onnx": "slimkit.export.onnx",
    "ExportConfig": "slimkit.export.onnx",
    "benchmark": "slimkit.bench",
    "BenchConfig": "slimkit.bench",
    "evaluate": "slimkit.evaluate",
    "predict": "slimkit.evaluate",
    "model_stats": "slimkit.analyse.stats",
    "analyze": "slimkit.analyse.profile",
    "Report": "slimkit.report",
    "run_demo": "slimkit.demo",
    "quantize": "slimkit.quantize",
    "QuantizeConfig": "slimkit.quantize",
    "DataParallel": "slimkit.parallel.pool",
    "PipelineParallel": "slimkit.parallel.pipeline",
    "RuntimeOptions": "slimkit.runtime.base",
    "RuntimeConfig": "slimkit.runtime.config",
    "tune": "slimkit.bench.tune",
    "TuneConfig": "slimkit.bench.tune",
    "InferenceServer": "slimkit.serve.server",
    "ServeConfig": "slimkit.serve.config",
    "prune": "slimkit.prune",
    "PruneConfig": "slimkit.prune",
    "apply_plan": "slimkit.prune",
    "load_pruned": "slimkit.prune",
    "distill": "slimkit.distill",
    "DistillConfig": "slimkit.distill",
    "shallow_student": "slimkit.distill",
    "low_rank": "slimkit.lowrank",
    "LowRankConfig": "slimkit.lowrank",
    "cluster": "slimkit.cluster",
    "ClusterConfig": "slimkit.cluster",
    "deep_compress": "slimkit.compact",
    "DeepCompressConfig": "slimkit.compact",
    "write_slim": "slimkit.compact",
    "load_slim": "slimkit.compact",
    "advise": "slimkit.advise",
    "AdviseConfig": "slimkit.advise",
    "behaviour_diff": "slimkit.evaluate.diff",
    "write_html_report": "slimkit.report.html",
    "compress": "slimkit.recipe",
    "Recipe": "slimkit.recipe",
    "load_recipe": "slimkit.recipe",
    "FinetuneConfig": "slimkit.train",
    "TrainConfig": "slimkit.train",
    "search": "slimkit.search",
    "SearchConfig": "slimkit.search",
}

__all__ = sorted(_API)


__getattr__, __dir__ = lazy_exports("slimkit", _API, globals())
