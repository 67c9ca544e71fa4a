"""PyTorch eager runtime, on the CPU or a CUDA device (``RuntimeOptions.provider='cuda'``)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from slimkit.errors import DataError, RuntimeUnavailableError
from slimkit.model import Model
from slimkit.runtime.base import RUNTIMES, Precision, RuntimeOptions


def torch_devices() -> list[str]:
    """The devices the torch runtimes can use here: ``cpu``, plus ``cuda`` with a CUDA GPU.

    Example:
        >>> "cpu" in torch_devices()
        True
    """
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def place(module: torch.nn.Module, options: RuntimeOptions) -> torch.nn.Module:
    """``module`` on the device of ``options`` in its precision: a copy unless it is CPU fp32
    (the user's module is never moved or cast)."""
    if options.provider not in torch_devices():
        raise RuntimeUnavailableError(
            f"device '{options.provider}' is not available to torch here; available: "
            f"{', '.join(torch_devices())}" + ("" if options.provider != "cuda" else
                                               " (needs a CUDA build of torch and a GPU)"))
    if options.provider == "cpu":
        return module
    moved = copy.deepcopy(module).to(options.provider)
    return moved.half() if options.precision is Precision.FP16 else moved


class TorchSession:
    runtime = "torch"

    def __init__(self, model: Model, options: RuntimeOptions) -> None:
        self.model = model
        self.options = options
        self.module = place(model.require_module(f"the {self.runtime} runtime").eval(), options)

    def _tensors(self, inputs: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
        args = self.model.torch_args(inputs)
        if self.options.provider == "cpu":
            return args
        half = self.options.precision is Precision.FP16
        return tuple(a.to(self.options.provider, non_blocking=True).half()
                     if half and a.is_floating_point() else a.to(self.options.provider)
                     for a in args)

    def _forward(self, module: Callable[..., Any],
                 inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = self._tensors(inputs)
        try:
            with torch.inference_mode():
                out = module(*args)
        except (RuntimeError, ValueError, IndexError) as exc:
            shapes = {k: tuple(v.shape) for k, v in inputs.items()}
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise DataError(
                f"inputs {shapes} do not fit model '{self.model.name}': {first}") from None
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().float().cpu().numpy() if o.is_floating_point()
                else o.detach().cpu().numpy() for o in outs]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._forward(self.module, inputs)

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        before = torch.get_num_threads()
        torch.set_num_threads(self.options.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        pass


RUNTIMES.register("torch")(TorchSession)
