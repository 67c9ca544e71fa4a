"""Lazy public names for packages: ``import slimkit`` (or a subpackage) stays quick and imports
a name's module only when the name is first used."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, api: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose names ``api`` maps to defining modules."""

    def getattr_(name: str) -> Any:
        if name in api:
            return getattr(importlib.import_module(api[name]), name)
        raise AttributeError(f"module '{package}' has no attribute '{name}'")

    def dir_() -> list[str]:
        return sorted([*namespace, *api])

    return getattr_, dir_
