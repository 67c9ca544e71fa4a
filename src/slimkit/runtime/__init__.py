"""Runtimes: a registry of ways to run a model, each giving a Session."""

from slimkit.runtime.base import (
    RUNTIMES,
    RuntimeOptions,
    Session,
    create_session,
    open_session,
    runtime_names,
    takes_onnx,
)

__all__ = ["RUNTIMES", "RuntimeOptions", "Session", "create_session", "open_session",
           "runtime_names", "takes_onnx"]
