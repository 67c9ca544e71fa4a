"""A deployable runtime config: which runtime, its options and the batch size, as JSON.

``slimkit tune`` writes one; ``slimkit bench --config`` and :meth:`RuntimeConfig.open` load it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.errors import InputError
from slimkit.model import Model
from slimkit.runtime.base import RuntimeOptions, Session, create_session

FORMAT = "slimkit-runtime-config/1"


@dataclass(frozen=True)
class RuntimeConfig:
    """A runtime, its options and the batch size to feed it; ``meta`` carries how it was found.

    Example:
        >>> c = RuntimeConfig("onnxruntime", RuntimeOptions(threads=2), batch=8)
        >>> RuntimeConfig.from_dict(c.to_dict()) == c
        True
    """

    runtime: str = "onnxruntime"
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    batch: int = 1
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise InputError(f"batch must be an integer >= 1, got {self.batch!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "runtime": self.runtime, "batch": self.batch,
                "options": self.options.to_dict(), "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeConfig:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"not a slimkit runtime config (expected \"format\": \"{FORMAT}\"; "
                             "write one with `slimkit tune MODEL -o tuned.json`)")
        return cls(runtime=str(data.get("runtime", "onnxruntime")),
                   options=RuntimeOptions.from_dict(dict(data.get("options") or {})),
                   batch=data.get("batch", 1), meta=dict(data.get("meta") or {}))

    def save(self, path: str | os.PathLike[str]) -> Path:
        from slimkit.io import check_output_path, write_text_atomic

        check_output_path(path)
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RuntimeConfig:
        from slimkit.io import require_file

        file = require_file(path, "runtime config")
        try:
            data = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"runtime config '{file}' is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def open(self, model: Model) -> Session:
        """A session of this config's runtime and options on ``model``."""
        return create_session(model, self.runtime, self.options)
