"""The model handle every part of slimkit passes around: a torch module or an ONNX file, plus
what is known about its inputs, outputs and task.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimkit.errors import DataError, InputError

if TYPE_CHECKING:
    import numpy as np
    import torch

DYNAMIC_BATCH = "batch"


class Task(str, enum.Enum):
    """What the model's first output means, which decides how it is evaluated."""

    CLASSIFICATION = "classification"  # logits (batch, classes)
    EMBEDDING = "embedding"  # one vector per example (batch, dim)
    CAUSAL_LM = "causal-lm"  # next-token logits (batch, sequence, vocab); see slimkit.llm
    OTHER = "other"


@dataclass(frozen=True)
class TensorSpec:
    """One model input: its name, shape (a ``str`` is a dynamic axis) and dtype.

    ``high`` bounds integer inputs such as token ids: synthetic values are drawn in ``[0, high)``.
    ``dynamic_range`` bounds the sizes of its dynamic axes other than the batch (an audio model
    needs a minimum number of samples, a text model has a maximum number of positions).
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    high: int | None = None
    dynamic_range: tuple[int, int] | None = None

    def concrete_shape(self, batch: int, dynamic: int = 128) -> tuple[int, ...]:
        """The shape with the batch axis set to ``batch`` and other dynamic axes to ``dynamic``
        (clamped into ``dynamic_range``)."""
        if self.dynamic_range is not None:
            dynamic = min(max(dynamic, self.dynamic_range[0]), self.dynamic_range[1])
        dims: list[int] = []
        for i, dim in enumerate(self.shape):
            if isinstance(dim, int) and dim > 0 and i > 0:
                dims.append(dim)
            elif i == 0:
                dims.append(batch)
            else:
                dims.append(dynamic)
        return tuple(dims)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class Model:
    """A loaded model: exactly one of ``module`` (torch) or ``onnx_path`` is set.

    Example:
        >>> import torch
        >>> m = Model(name="lin", source="example", module=torch.nn.Linear(4, 2),
        ...           inputs=(TensorSpec("input", ("batch", 4)),), output_names=("output",))
        >>> m.framework
        'torch'
    """

    name: str
    source: str
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...] = ("output",)
    task: Task = Task.OTHER
    module: torch.nn.Module | None = None
    onnx_path: Path | None = None
    tokenizer: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.module is None) == (self.onnx_path is None):
            raise InputError(f"model '{self.name}' needs exactly one of a module or an ONNX path")
        if not self.inputs:
            raise InputError(f"model '{self.name}' has no input specification")

    @property
    def framework(self) -> str:
        return "torch" if self.module is not None else "onnx"

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def require_module(self, purpose: str) -> torch.nn.Module:
        """The torch module, or a clear error when this model is an ONNX file."""
        if self.module is None:
            raise InputError(
                f"{purpose} needs a PyTorch model, but '{self.source}' is an ONNX file; "
                "pass the PyTorch model (a factory spec, a Hugging Face folder or builtin:NAME)"
            )
        return self.module

    def with_onnx(self, path: Path, source: str | None = None) -> Model:
        """A handle on the exported ONNX file of this model, keeping its specs and tokenizer."""
        return replace(self, module=None, onnx_path=Path(path), source=source or str(path))

    def with_input_shape(self, shape: tuple[int, ...]) -> Model:
        """This model with its single input declared as ``shape`` (batch axis kept dynamic)."""
        if len(self.inputs) != 1:
            raise InputError(f"--input-shape applies to models with one input; "
                             f"'{self.name}' has {list(self.input_names)}")
        spec = self.inputs[0]
        return replace(self, inputs=(replace(spec, shape=(spec.shape[0], *shape[1:])),))

    def torch_args(self, batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
        """The positional tensors for ``module(*args)``, in input order, from named arrays."""
        import torch

        missing = [name for name in self.input_names if name not in batch]
        if missing:
            raise DataError(
                f"model '{self.name}' needs inputs {list(self.input_names)}; "
                f"the data has no {missing}"
            )
        return tuple(torch.from_numpy(batch[name]) for name in self.input_names)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "framework": self.framework,
            "task": self.task.value,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": list(self.output_names),
        }


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Run a block with ``module`` (and every submodule) in eval mode, then restore each
    submodule's own training flag."""
    flags = {sub: sub.training for sub in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for sub, training in flags.items():
            sub.training = training


def first_tensor(output: Any) -> torch.Tensor:
    """A model's main output: the tensor itself, the first of a tuple, or the first value of a
    dict (Hugging Face outputs).

    Example:
        >>> import torch
        >>> first_tensor((torch.ones(2), torch.zeros(1))).tolist()
        [1.0, 1.0]
    """
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict) and output:
        return first_tensor(next(iter(output.values())))
    raise InputError("the model's first output is not a tensor; pass a loss that reads its "
                     "outputs")
