"""A recipe: an ordered list of stages with their configs, read from YAML (safe loading) into
the same frozen config dataclasses the Python API takes, and written back out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from slimkit.config import config_to_dict
from slimkit.errors import InputError
from slimkit.io import require_file
from slimkit.recipe.optional import stage_type
from slimkit.recipe.schema import config_from_data

TOP_KEYS = ("name", "description", "max_drop", "stages")


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: a registered stage name and its config object."""

    name: str
    config: Any

    def to_dict(self) -> dict[str, Any]:
        to_dict = getattr(self.config, "to_dict", None)
        return {self.name: to_dict() if to_dict else config_to_dict(self.config)}


@dataclass(frozen=True)
class Recipe:
    """Stages run in order; ``max_drop`` (optional) is the metric budget checked at the end.

    Example:
        >>> r = Recipe.from_dict({"stages": [{"prune": {"ratio": 0.5}}, "finetune", "export"]})
        >>> [s.name for s in r.stages], r.stages[0].config.ratio
        (['prune', 'finetune', 'export'], 0.5)
    """

    stages: tuple[Stage, ...]
    name: str = "recipe"
    description: str = ""
    max_drop: float | None = None

    def __post_init__(self) -> None:
        if not self.stages:
            raise InputError("stages: a recipe needs at least one stage")
        if self.max_drop is not None and not (math.isfinite(self.max_drop)
                                              and self.max_drop >= 0):
            raise InputError(f"max_drop: must be a number >= 0, got {self.max_drop}")
        onnx_at = None
        for i, stage in enumerate(self.stages):
            kind = stage_type(stage.name, f"stages[{i}]")
            if kind.needs_torch and onnx_at is not None:
                raise InputError(f"stages[{i}].{stage.name}: needs a PyTorch model, but "
                                 f"stages[{onnx_at}] already made an ONNX file; move it earlier")
            if kind.makes_onnx and onnx_at is None:
                onnx_at = i

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        if not isinstance(data, dict):
            raise InputError("recipe: expected a mapping with 'stages' (and optionally "
                             f"{', '.join(k for k in TOP_KEYS if k != 'stages')})")
        unknown = sorted(set(data) - set(TOP_KEYS))
        if unknown:
            raise InputError(f"{unknown[0]}: unknown key; allowed: {', '.join(TOP_KEYS)}")
        raw = data.get("stages")
        if not isinstance(raw, list):
            raise InputError("stages: expected a list of stages, e.g. [{prune: {ratio: 0.5}}]")
        stages = tuple(_stage(item, f"stages[{i}]") for i, item in enumerate(raw))
        max_drop = data.get("max_drop")
        if max_drop is not None and (isinstance(max_drop, bool)
                                     or not isinstance(max_drop, (int, float))):
            raise InputError(f"max_drop: expected a number, got {max_drop!r}")
        for key in ("name", "description"):
            if key in data and not isinstance(data[key], str):
                raise InputError(f"{key}: expected a string, got {data[key]!r}")
        return cls(stages, str(data.get("name", "recipe")), str(data.get("description", "")),
                   None if max_drop is None else float(max_drop))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.max_drop is not None:
            out["max_drop"] = self.max_drop
        out["stages"] = [stage.to_dict() for stage in self.stages]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _stage(item: Any, path: str) -> Stage:
    if isinstance(item, str):
        name, settings = item, None
    elif isinstance(item, dict) and len(item) == 1:
        name, settings = next(iter(item.items()))
    else:
        raise InputError(f"{path}: expected one stage name, or a mapping of one stage name to "
                         "its settings, e.g. {quantize: {mode: static}}")
    kind = stage_type(str(name), path)
    return Stage(kind.name, config_from_data(kind.config, settings, f"{path}.{name}"))


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe YAML file (``yaml.safe_load``: no Python objects are ever built).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "r.yaml"
        >>> _ = f.write_text("stages:\\n  - quantize: {mode: dynamic}\\n")
        >>> load_recipe(f).stages[0].config.mode.value
        'dynamic'
    """
    file = require_file(path, "recipe")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"recipe '{file}' is not valid YAML: {exc}") from None
    try:
        return Recipe.from_dict(data)
    except InputError as exc:
        raise InputError(f"recipe '{file}': {exc}") from None
