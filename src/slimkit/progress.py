"""The one progress wrapper (rich) for long work; silent when not on a terminal or when quiet."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) progress bars for this process; the CLI's ``--quiet`` calls it."""
    global _quiet
    _quiet = quiet


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar on stderr when it is a terminal."""
    if _quiet or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)
