"""``slimkit serve``: an HTTP inference server with dynamic batching, health and metrics (and
the Open Inference Protocol v2); for causal LMs, OpenAI's API over continuous batching.

Names are imported lazily (the server pulls in a runtime only when it is built).
"""

from __future__ import annotations

from slimkit._lazy import lazy_exports

# public name -> module that defines it
_API = {
    "InferenceServer": "slimkit.serve.server",
    "ServeConfig": "slimkit.serve.config",
    "Batcher": "slimkit.serve.batcher",
    "Metrics": "slimkit.serve.metrics",
    "BadRequest": "slimkit.serve.codec",
    "LLMServer": "slimkit.serve.llm.server",
    "LLMServeConfig": "slimkit.serve.llm.config",
    "DecodeEngine": "slimkit.serve.llm.engine",
    "TorchDecodeEngine": "slimkit.serve.llm.torch_engine",
    "ContinuousBatcher": "slimkit.serve.llm.continuous",
    "BatchPolicy": "slimkit.serve.llm.continuous",
    "SamplingParams": "slimkit.serve.llm.sampling",
}

__all__ = sorted(_API)


__getattr__, __dir__ = lazy_exports("slimkit.serve", _API, globals())
