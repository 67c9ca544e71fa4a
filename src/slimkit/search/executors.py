"""Where proxy trials run: in this process, or as Ray tasks (each pinned to ``threads`` CPUs).
Both evaluate the same points and return results in the order asked, so a seeded search gives
the same trials either way."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from slimkit._deps import require
from slimkit.registry import Registry
from slimkit.search.proxy import TrialContext, evaluate_point

log = logging.getLogger(__name__)


class Executor(Protocol):
    def map(self, points: list[dict[str, Any]]) -> list[dict[str, float]]: ...

    def close(self) -> None: ...


EXECUTORS: Registry[Any] = Registry("search executor")


@EXECUTORS.register("inprocess")
class InProcessExecutor:
    def __init__(self, ctx: TrialContext, workers: int = 1, address: str | None = None) -> None:
        self.ctx = ctx

    def map(self, points: list[dict[str, Any]]) -> list[dict[str, float]]:
        return [evaluate_point(self.ctx, p) for p in points]

    def close(self) -> None:
        pass


def _remote_evaluate(ctx: TrialContext, params: dict[str, Any]) -> dict[str, float]:
    return evaluate_point(ctx, params)


@EXECUTORS.register("ray")
class RayExecutor:
    """Ray tasks of ``ctx.threads`` CPUs each; a local Ray with ``workers`` CPUs is started
    (and shut down on close) unless ``address`` names a running cluster."""

    def __init__(self, ctx: TrialContext, workers: int = 2, address: str | None = None) -> None:
        ray = require("ray", "the Ray executor")
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "configure_logging": False}
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=workers * ctx.threads, **options)
        self.ctx_ref = ray.put(ctx)
        self.task = ray.remote(num_cpus=ctx.threads, max_retries=1)(_remote_evaluate)

    def map(self, points: list[dict[str, Any]]) -> list[dict[str, float]]:
        refs = [self.task.remote(self.ctx_ref, p) for p in points]
        return list(self.ray.get(refs))

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
