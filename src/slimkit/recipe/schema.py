"""Plain data (parsed YAML) -> frozen config dataclasses, checked field by field against the
dataclass's type hints, with errors that name the key path (``stages[1].quantize.mode``) and the
allowed values.

Written by hand because the config classes are plain stdlib dataclasses: a schema library
(pydantic, cattrs) would need a second description of every config or a new dependency for
what is ~80 lines of type-hint walking.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from typing import Any, TypeVar

from slimkit.errors import InputError

C = TypeVar("C")


def config_from_data(cls: type[C], data: Any, path: str) -> C:
    """Build ``cls`` (a config dataclass) from a mapping, checking every key and type.

    Example:
        >>> from slimkit.prune import PruneConfig
        >>> config_from_data(PruneConfig, {"ratio": 0.25}, "stages[0].prune").ratio
        0.25
        >>> config_from_data(PruneConfig, {"ratoi": 0.25}, "stages[0].prune")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        slimkit.errors.InputError: stages[0].prune.ratoi: unknown key; allowed: ...
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise InputError(f"{path}.{key}: unknown key; allowed: {', '.join(sorted(fields))}")
        values[key] = coerce(value, hints[key], f"{path}.{key}")
    try:
        return cls(**values)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def coerce(value: Any, hint: Any, path: str) -> Any:
    """``value`` checked against the type ``hint`` (lists become tuples, strings enums)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(value, option, path)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0] if len(errors) == 1 else
                         f"{path}: expected {' or '.join(describe(o) for o in args)}, "
                         f"got {_kind(value)}")
    if origin is tuple:
        return _tuple(value, args, path)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [str(m.value) for m in hint]
        if isinstance(value, hint) or value in allowed:
            return hint(value)
        raise InputError(f"{path}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
    return _scalar(value, hint, path)


def _tuple(value: Any, args: tuple[Any, ...], path: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{path}: expected a list, got {_kind(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise InputError(f"{path}: expected a list of {len(args)} items, got {len(value)}")
    return tuple(coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args,
                                                                            strict=True)))


def _scalar(value: Any, hint: Any, path: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise InputError(f"{path}: expected {describe(hint)}, got {_kind(value)} {value!r}")


def describe(hint: Any) -> str:
    """A short human name of a type hint."""
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in hint)
    if typing.get_origin(hint) is tuple:
        return "a list"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value),
                                                                        type(value).__name__)
