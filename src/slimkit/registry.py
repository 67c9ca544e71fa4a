"""One small registry class, used for runtimes, zoo models, data sources and (later) techniques.

Handlers are found by name through a registry, never through if/elif ladders repeated across
files (see STYLE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from slimkit.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from keys to handlers, with a decorator to register them.

    Example:
        >>> runtimes: Registry[str] = Registry("runtime")
        >>> @runtimes.register("echo")
        ... def make_echo() -> str:
        ...     return "echo"
        >>> runtimes.get("echo")()
        'echo'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise InputError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
