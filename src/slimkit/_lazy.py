"""Lazy public names for packages: ``import slimkit`` (or a subpackage) stays quick and imports
a name's module only when the name is first used."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


class VerbPackage(types.ModuleType):
    """A package whose public verbs share their subpackage's name (``slimkit.prune`` the function
    lives in ``slimkit/prune/``). Importing ``slimkit.prune.x`` makes Python set the package's
    attribute ``prune`` to the subpackage, which would hide the verb (``slimkit.prune(...)`` would
    then fail with "module is not callable"); this class stores the verb instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        api = self.__dict__.get("_API", {})
        if isinstance(value, types.ModuleType) and api.get(name) == value.__name__ \
                and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(package: str, api: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose names ``api`` maps to defining modules.

    The package's module also becomes a ``VerbPackage``, so a verb named like its subpackage
    stays the verb after the subpackage is imported.
    """
    sys.modules[package].__class__ = VerbPackage

    def getattr_(name: str) -> Any:
        if name in api:
            return getattr(importlib.import_module(api[name]), name)
        raise AttributeError(f"module '{package}' has no attribute '{name}'")

    def dir_() -> list[str]:
        return sorted([*namespace, *api])

    return getattr_, dir_
