"""``slimkit serve``: an HTTP inference server with dynamic batching, health and metrics.

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
}

__all__ = sorted(_API)


__getattr__, __dir__ = lazy_exports("slimkit.serve", _API, globals())
