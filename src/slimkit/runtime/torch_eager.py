"""PyTorch eager runtime."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from slimkit.errors import DataError
from slimkit.model import Model
from slimkit.runtime.base import RUNTIMES, RuntimeOptions


class TorchSession:
    runtime = "torch"

    def __init__(self, model: Model, options: RuntimeOptions) -> None:
        self.model = model
        self.module = model.require_module("the torch runtime").eval()
        self.options = options

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = self.model.torch_args(inputs)
        try:
            with torch.inference_mode():
                out = self.module(*args)
        except (RuntimeError, ValueError, IndexError) as exc:
            shapes = {k: tuple(v.shape) for k, v in inputs.items()}
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise DataError(
                f"inputs {shapes} do not fit model '{self.model.name}': {first}") from None
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().numpy() for o in outs]

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
