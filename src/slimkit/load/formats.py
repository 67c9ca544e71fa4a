"""The model formats :func:`slimkit.load.load_model` knows: a registry of small records, each
saying how to recognise a spec and how to read it.

The loader defines only the formats that need no technique (ONNX files, Hugging Face folders,
``package.module:factory``). Every other format registers itself where it is written: a pruned
folder in ``slimkit.prune``, a low-rank folder in ``slimkit.lowrank``, a ``.slim`` file in
``slimkit.compact``, the ``builtin:`` zoo in ``slimkit.zoo``. They are found through the Python
packaging entry points of group ``slimkit.formats`` (declared in ``pyproject.toml``), so this
package imports no technique, and a third-party package can add a format the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slimkit.errors import ModelLoadError
from slimkit.model import Model, TensorSpec

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "slimkit.formats"


@dataclass(frozen=True)
class LoadOptions:
    """What a format's reader may use: factory weights, an input shape, the seed of random
    init (and of the training of built-in digits models), the input signature given by the
    user (a factory model takes it as it is) and a pooling asked of an encoder."""

    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    seed: int = 0
    inputs: tuple[TensorSpec, ...] | None = None
    pooling: str | None = None


@dataclass(frozen=True)
class ModelFormat:
    """One format: ``recognise(spec, path)`` says whether a spec is of it (cheap: names and
    marker files, no parsing), ``read(spec, path, options)`` loads it. Formats are tried by
    ``priority``, lowest first; ``takes_weights`` marks the one that accepts factory weights."""

    name: str
    recognise: Callable[[str, Path], bool]
    read: Callable[[str, Path, LoadOptions], Model]
    priority: int = 50
    takes_weights: bool = False


_FORMATS: dict[str, ModelFormat] = {}
_discovered = False


def register_format(fmt: ModelFormat) -> ModelFormat:
    """Add (or replace) a format; returns it, so a module can write
    ``FORMAT = register_format(ModelFormat(...))``."""
    _FORMATS[fmt.name] = fmt
    return fmt


def formats() -> list[ModelFormat]:
    """Every format, in the order they are tried (entry points loaded on first use)."""
    _discover()
    return sorted(_FORMATS.values(), key=lambda f: (f.priority, f.name))


def find_format(spec: str) -> ModelFormat | None:
    """The first format that recognises ``spec``."""
    path = Path(spec).expanduser()
    return next((f for f in formats() if f.recognise(spec, path)), None)


def _discover() -> None:
    """Import the modules the ``slimkit.formats`` entry points name (once); each registers its
    format on import. A broken third-party entry point is logged and skipped."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            fmt = point.load()
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop loading
            log.warning("model format '%s' (%s) could not be loaded: %s: %s", point.name,
                        point.value, type(exc).__name__, exc)
            continue
        if isinstance(fmt, ModelFormat):
            register_format(fmt)
    if not any(f.name == "builtin" for f in _FORMATS.values()):
        raise ModelLoadError("slimkit's model formats are not registered (the package's entry "
                             "points are missing): reinstall it with pip install -e .")
