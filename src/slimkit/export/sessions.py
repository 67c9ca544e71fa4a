"""Sessions for any model on any runtime: a torch model opened on a runtime that runs ONNX files
is exported (and verified) to a temporary file first, removed when the session closes.

The runtimes themselves (``slimkit.runtime``) open only what they run: a torch module or an ONNX
file. Converting between the two is this package's job, so the runtime layer imports nothing
above it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.model import Model
from slimkit.runtime import RuntimeOptions, Session, create_session, takes_onnx


class ExportedSession:
    """A session on a temporary ONNX export of a torch model; closing it removes the file."""

    def __init__(self, inner: Session, folder: tempfile.TemporaryDirectory[str]) -> None:
        self.inner, self._folder = inner, folder
        self.runtime = inner.runtime

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.inner.run(inputs)

    def pinned(self) -> contextlib.AbstractContextManager[None]:
        return self.inner.pinned()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self._folder.cleanup()

    def __getattr__(self, name: str) -> Any:  # the runtime's own attributes (path, session)
        return getattr(self.inner, name)


def session_for(model: Model, runtime: str = "torch",
                options: RuntimeOptions | None = None) -> Session:
    """A session of ``runtime`` on ``model``, exporting a torch model when the runtime runs
    ONNX files.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> s = session_for(tiny_model("mlp"), "onnxruntime")
        >>> s.run({"input": np.zeros((2, 8), np.float32)})[0].shape
        (2, 4)
        >>> s.close()
    """
    if model.module is None or not takes_onnx(runtime):
        return create_session(model, runtime, options)
    from slimkit.export.onnx import export_onnx

    folder = tempfile.TemporaryDirectory(prefix="slimkit-session-")
    try:
        exported = export_onnx(model, Path(folder.name) / f"{model.name}.onnx").model
        return ExportedSession(create_session(exported, runtime, options), folder)
    except BaseException:
        folder.cleanup()
        raise


@contextlib.contextmanager
def open_session_for(model: Model, runtime: str = "torch",
                     options: RuntimeOptions | None = None) -> Iterator[Session]:
    """:func:`session_for` as a context manager."""
    session = session_for(model, runtime, options)
    try:
        yield session
    finally:
        session.close()
