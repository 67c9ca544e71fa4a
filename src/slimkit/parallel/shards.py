"""Shards, the pure half of data parallelism: split examples into ordered shards, and merge
the shards' outputs back into one result in input order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from slimkit.data import Dataset
from slimkit.errors import DataError, InputError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """One unit of work: examples ``start:stop`` of the input, as named arrays."""

    index: int
    start: int
    stop: int
    inputs: dict[str, np.ndarray]

    def describe(self) -> str:
        return f"shard {self.index} (examples {self.start}:{self.stop})"


def as_dataset(data: Dataset | Mapping[str, np.ndarray]) -> Dataset:
    """A Dataset from a Dataset or from one batch of named arrays."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, Mapping):
        return Dataset({k: np.asarray(v) for k, v in data.items()}, name="batch")
    raise DataError(f"data-parallel input is a Dataset or a dict of named arrays, "
                    f"not {type(data).__name__}")


def check_shard_size(shard_size: int) -> int:
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise InputError(f"batch size (examples per shard) must be an integer >= 1, "
                         f"got {shard_size!r}")
    return shard_size


def split(data: Dataset | Mapping[str, np.ndarray], shard_size: int) -> Iterator[Shard]:
    """Cut ``data`` into consecutive shards of ``shard_size`` examples (the last may be smaller).

    Example:
        >>> ds = Dataset({"input": np.zeros((5, 2), np.float32)})
        >>> [(s.index, s.start, s.stop) for s in split(ds, 2)]
        [(0, 0, 2), (1, 2, 4), (2, 4, 5)]
    """
    check_shard_size(shard_size)
    dataset = as_dataset(data)
    for index, start in enumerate(range(0, len(dataset), shard_size)):
        stop = min(start + shard_size, len(dataset))
        inputs = {k: np.ascontiguousarray(v[start:stop]) for k, v in dataset.inputs.items()}
        yield Shard(index, start, stop, inputs)


def shards_of(batches: Iterable[Mapping[str, np.ndarray]]) -> Iterator[Shard]:
    """Number a stream of batches (a user's loader) as shards, checking each is well formed."""
    start = 0
    for index, batch in enumerate(batches):
        arrays = {k: np.asarray(v) for k, v in batch.items()}
        sizes = {k: (len(v) if v.ndim else 0) for k, v in arrays.items()}
        if not arrays or len(set(sizes.values())) != 1 or 0 in sizes.values():
            raise DataError(f"batch {index} must hold one or more named arrays with the same "
                            f"number (>= 1) of examples; got sizes {sizes}")
        size = next(iter(sizes.values()))
        yield Shard(index, start, start + size,
                    {k: np.ascontiguousarray(v) for k, v in arrays.items()})
        start += size


def merge(parts: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Concatenate per-shard outputs (each a list, one array per model output) along axis 0.

    Example:
        >>> merge([[np.zeros((2, 3))], [np.ones((1, 3))]])[0].shape
        (3, 3)
    """
    if not parts:
        raise DataError("there are no outputs to merge: the input has no examples")
    counts = {len(p) for p in parts}
    if len(counts) != 1:
        raise DataError(f"shards returned different numbers of outputs: {sorted(counts)}")
    return [np.concatenate([p[i] for p in parts]) for i in range(counts.pop())]


class InOrder(Generic[T]):
    """A reorder buffer: items arrive tagged with their index in any order and leave in order.

    An index that arrives twice, or one that was already released, is refused: outputs are
    never duplicated.

    Example:
        >>> buf: InOrder[str] = InOrder()
        >>> buf.put(1, "b"); list(buf.ready())
        []
        >>> buf.put(0, "a"); list(buf.ready())
        ['a', 'b']
    """

    def __init__(self) -> None:
        self._next = 0
        self._held: dict[int, T] = {}

    @property
    def released(self) -> int:
        """How many items have left, i.e. the index of the next one to leave."""
        return self._next

    def __len__(self) -> int:
        return len(self._held)

    def put(self, index: int, item: T) -> None:
        if index < self._next or index in self._held:
            raise RuntimeError(f"shard {index} was delivered twice; this is a bug in slimkit")
        self._held[index] = item

    def ready(self) -> Iterator[T]:
        while self._next in self._held:
            item = self._held.pop(self._next)
            self._next += 1
            yield item
