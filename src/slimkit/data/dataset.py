"""The small data wrapper every algorithm takes: named input arrays plus optional labels.

Algorithms never touch the user's DataLoader; they iterate ``Dataset.batches``. Arrays are NumPy,
the format both torch and ONNX Runtime take without copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from slimkit.errors import DataError

Batch = tuple[dict[str, np.ndarray], "np.ndarray | None"]


@dataclass(frozen=True)
class Dataset:
    """Named input arrays (first axis = examples) and optional labels.

    Example:
        >>> ds = Dataset({"input": np.zeros((5, 4), np.float32)}, labels=np.arange(5))
        >>> [len(y) for _, y in ds.batches(2)]
        [2, 2, 1]
    """

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None
    name: str = "data"

    def __post_init__(self) -> None:
        if not self.inputs:
            raise DataError(f"dataset '{self.name}' has no input arrays")
        sizes = {key: len(value) for key, value in self.inputs.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"dataset '{self.name}': input arrays differ in length: {sizes}")
        if self.labels is not None and len(self.labels) != len(self):
            raise DataError(
                f"dataset '{self.name}': {len(self.labels)} labels for {len(self)} examples"
            )

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Yield ``(inputs, labels)`` batches in order; the last one may be smaller."""
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            inputs = {k: np.ascontiguousarray(v[start:stop]) for k, v in self.inputs.items()}
            labels = None if self.labels is None else self.labels[start:stop]
            yield inputs, labels

    def take(self, n: int) -> Dataset:
        """The first ``n`` examples (all of them when there are fewer)."""
        return Dataset(
            {k: v[:n] for k, v in self.inputs.items()},
            None if self.labels is None else self.labels[:n],
            self.name,
        )

    def first_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        return next(self.batches(batch_size))[0]

    @classmethod
    def from_batches(
        cls, batches: Iterable[Mapping[str, np.ndarray]], name: str = "data"
    ) -> Dataset:
        """Collect an iterable of named-array batches (e.g. a user's loader) into a Dataset.

        A key named ``labels`` becomes the labels.
        """
        collected: dict[str, list[np.ndarray]] = {}
        for batch in batches:
            for key, value in batch.items():
                collected.setdefault(key, []).append(np.asarray(value))
        if not collected:
            raise DataError(f"dataset '{name}': the iterable yielded no batches")
        arrays = {key: np.concatenate(parts) for key, parts in collected.items()}
        labels = arrays.pop("labels", None)
        return cls(arrays, labels, name)
