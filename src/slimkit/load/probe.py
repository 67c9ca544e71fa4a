"""Run a torch model once on synthetic inputs of its signature and, when it fails, name the layer
that failed and what that layer expects, in one line (never the internal exception's text)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from slimkit.errors import DataError
from slimkit.model import Model, eval_mode

# attributes that say what a layer expects of its input, for the error line
EXPECTS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("num_embeddings", lambda m: f"integer ids (int64) below {m.num_embeddings}"),
    ("in_channels", lambda m: f"{m.in_channels} input channels"),
    ("in_features", lambda m: f"{m.in_features} input features on its last axis"),
    ("input_size", lambda m: f"{m.input_size} features per step"),
    ("normalized_shape", lambda m: f"a last axis of {tuple(m.normalized_shape)}"),
    ("num_features", lambda m: f"{m.num_features} channels"),
)


class LayerTracker:
    """Which submodule is running: ``innermost`` is the deepest module entered and not left
    (after an exception, the layer that raised it). Hooks are removed on exit."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.stack: list[tuple[str, nn.Module]] = []
        self._handles: list[Any] = []

    def __enter__(self) -> LayerTracker:
        for name, sub in self.module.named_modules():
            self._handles.append(sub.register_forward_pre_hook(self._enter(name)))
            self._handles.append(sub.register_forward_hook(self._leave))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _enter(self, name: str) -> Callable[..., None]:
        def hook(sub: nn.Module, _args: Any) -> None:
            self.stack.append((name, sub))

        return hook

    def _leave(self, _sub: nn.Module, _args: Any, _out: Any) -> None:
        if self.stack:
            self.stack.pop()

    @property
    def innermost(self) -> tuple[str, nn.Module] | None:
        return self.stack[-1] if self.stack else None


def layer_text(found: tuple[str, nn.Module] | None) -> str:
    """``layer 'encoder.0' (Linear), which expects 16 input features``, or ``its forward``."""
    if found is None:
        return "its forward"
    name, sub = found
    text = f"layer '{name or '(top)'}' ({type(sub).__name__})"
    for attr, say in EXPECTS:
        if hasattr(sub, attr):
            with contextlib.suppress(Exception):
                return f"{text}, which expects {say(sub)}"
    return text


@contextlib.contextmanager
def named_failure(module: nn.Module) -> Iterator[LayerTracker]:
    """Track the running layer of ``module`` for the block (hooks removed afterwards)."""
    with LayerTracker(module) as tracker:
        yield tracker


def probe(model: Model, source: str) -> None:
    """Run ``model`` (a torch model) on a synthetic batch of 2 from its signature; raise a
    DataError naming the failing layer when it does not run."""
    from slimkit.data import synthetic
    from slimkit.load.signature import describe

    module = model.module
    if module is None:
        return
    args = model.torch_args(synthetic(model.inputs, 2, seed=0, dynamic=16).first_batch(2))
    with eval_mode(module), torch.no_grad(), named_failure(module) as tracker:
        try:
            module(*args)
        except Exception as exc:  # the user's model may raise anything: name where it failed
            raise DataError(
                f"the inputs {describe(model.inputs)} from {source} do not fit model "
                f"'{model.name}' ({type(exc).__name__} in {layer_text(tracker.innermost)}); "
                "check the input shapes and dtypes") from None
