"""Parallel execution: split the forward work, assign it to worker processes, coordinate.

Data parallelism (:class:`DataParallel`): examples are cut into shards (``split``), each shard
runs in one of several worker processes with pinned thread counts (``assign``), and the
results come back merged in input order, with back-pressure and failures surfaced as errors
naming the worker and the shard (``pool``).

Pipeline parallelism (:class:`PipelineParallel`): a torch model's top-level children are cut
into stages balanced by measured cost (``stages``), one worker process per stage, joined by
bounded queues that carry micro-batches in order (``pipeline``).

Names are imported lazily: importing ``slimkit.parallel`` (as every worker process does before
it pins its threads) loads neither NumPy, torch nor ONNX Runtime.
"""

from __future__ import annotations

from slimkit._lazy import lazy_exports

# public name -> module that defines it
_API = {
    "DataParallel": "slimkit.parallel.pool",
    "PipelineParallel": "slimkit.parallel.pipeline",
    "AdvancedPipelineOptions": "slimkit.parallel.pipeline",
    "StagePlan": "slimkit.parallel.stages",
    "AdvancedParallelOptions": "slimkit.parallel.options",
    "StartMethod": "slimkit.parallel.options",
    "ModelSpec": "slimkit.parallel.spec",
    "Shard": "slimkit.parallel.shards",
    "split": "slimkit.parallel.shards",
    "merge": "slimkit.parallel.shards",
    "InOrder": "slimkit.parallel.shards",
    "available_cores": "slimkit.parallel.assign",
    "WorkerError": "slimkit.parallel.errors",
    "WorkerCrashedError": "slimkit.parallel.errors",
    "WorkerTimeoutError": "slimkit.parallel.errors",
    "OversubscriptionWarning": "slimkit.parallel.errors",
}

__all__ = sorted(_API)


__getattr__, __dir__ = lazy_exports("slimkit.parallel", _API, globals())
