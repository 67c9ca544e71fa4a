"""Feature (hint) taps on named layers and the small adapters that bridge differing widths.

A tap records a layer's output with a forward hook for the duration of a ``with`` block; the
hooks are removed afterwards. An adapter is an ``nn.Linear`` on the last axis or a 1x1
``nn.Conv2d`` on the channel axis: the cheapest map that makes the shapes agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from slimkit.errors import InputError


@contextlib.contextmanager
def tap(module: nn.Module, names: tuple[str, ...], role: str) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named submodules of ``module`` (a tuple output: its first
    tensor) into the yielded dict during the block.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> with tap(m, ("0",), "student") as seen:
        ...     _ = m(torch.zeros(1, 2))
        >>> tuple(seen["0"].shape)
        (1, 3)
    """
    modules = dict(module.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        sample = ", ".join(n for n in list(modules)[1:9])
        raise InputError(f"the {role} has no layer named {missing}; layer names are qualified "
                         f"module names such as: {sample}")
    seen: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(_recorder(seen, n)) for n in names]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _recorder(seen: dict[str, torch.Tensor], name: str) -> Any:
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(out, torch.Tensor):
            out = getattr(output, "last_hidden_state", None)
        if not isinstance(out, torch.Tensor):
            raise InputError(f"layer '{name}' gives {type(output).__name__}, not a tensor; "
                             "pick a layer whose output is a tensor")
        seen[name] = out

    return hook


def make_adapter(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...],
                 what: str) -> nn.Module:
    """The adapter from a student tensor to the teacher's shape (``nn.Identity`` when equal).

    Example:
        >>> make_adapter((2, 8, 4, 4), (2, 16, 4, 4), "hint")
        Conv2d(8, 16, kernel_size=(1, 1), stride=(1, 1), bias=False)
    """
    if student_shape == teacher_shape:
        return nn.Identity()
    if len(student_shape) == len(teacher_shape) == 4 and \
            student_shape[2:] == teacher_shape[2:] and student_shape[0] == teacher_shape[0]:
        return nn.Conv2d(student_shape[1], teacher_shape[1], 1, bias=False)
    if len(student_shape) == len(teacher_shape) and student_shape[:-1] == teacher_shape[:-1]:
        return nn.Linear(student_shape[-1], teacher_shape[-1], bias=False)
    raise InputError(f"{what}: student shape {student_shape} and teacher shape {teacher_shape} "
                     "differ in more than the channel (NCHW axis 1) or last axis; no 1x1 conv "
                     "or linear adapter can map one onto the other: pick layers whose other "
                     "axes agree")


def adapter_hint(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> str:
    """A description of the adapter that would make the shapes agree, for error messages."""
    try:
        adapter = make_adapter(student_shape, teacher_shape, "output")
    except InputError:
        return "no 1x1 conv or linear adapter can map one onto the other"
    return f"an adapter {adapter} is needed"


class Adapters(nn.Module):
    """The learned adapters of one run, keyed by the student layer (``output`` for the
    model's output); saved in checkpoints beside the student."""

    def __init__(self) -> None:
        super().__init__()
        self.maps = nn.ModuleDict()

    def add(self, key: str, adapter: nn.Module) -> None:
        self.maps[_key(key)] = adapter

    def adapt(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        name = _key(key)
        return self.maps[name](tensor) if name in self.maps else tensor


def _key(name: str) -> str:
    return name.replace(".", "__")  # ModuleDict keys cannot hold dots
