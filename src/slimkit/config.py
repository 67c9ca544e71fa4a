"""What every technique's frozen config dataclass shares: turning the strings that the CLI and
recipes give into the config's enums, with an error that lists the choices, and the round trip
to and from plain JSON data."""

from __future__ import annotations

import enum
from dataclasses import asdict
from typing import Any, TypeVar

from slimkit.errors import InputError

C = TypeVar("C")


def coerce_enums(config: Any, fields: dict[str, type[enum.Enum]]) -> None:
    """Replace each named field of a frozen dataclass by its enum member (from a str or member).

    Example:
        >>> import dataclasses
        >>> class Mode(str, enum.Enum):
        ...     A = "a"
        >>> @dataclasses.dataclass(frozen=True)
        ... class C:
        ...     mode: Mode = Mode.A
        ...     def __post_init__(self):
        ...         coerce_enums(self, {"mode": Mode})
        >>> C(mode="a").mode is Mode.A
        True
    """
    for name, kind in fields.items():
        value = getattr(config, name)
        try:
            object.__setattr__(config, name, kind(value))
        except ValueError:
            choices = ", ".join(str(k.value) for k in kind)
            raise InputError(f"{name} '{value}' is not one of: {choices}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as plain JSON data: enums by value, tuples as lists."""

    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return {key: plain(value) for key, value in asdict(config).items()}


def config_from_dict(cls: type[C], data: dict[str, Any], what: str) -> C:
    """``cls`` from ``config_to_dict``'s output: an allow-list of the dataclass's fields (an
    unknown key fails, naming the known ones); JSON lists become the config's tuples.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class C:
        ...     rules: tuple[tuple[str, float], ...] = ()
        >>> config_from_dict(C, {"rules": [["name:fc", 0.5]]}, "example")
        C(rules=(('name:fc', 0.5),))
    """
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown {what} config fields {unknown}; known: {sorted(known)}")

    def frozen(value: Any) -> Any:
        return tuple(frozen(v) for v in value) if isinstance(value, list) else value

    return cls(**{key: frozen(value) for key, value in data.items()})
