"""Batch requests of different sequence lengths: pad to the longest, cut outputs back.

A model that takes an ``attention_mask`` (BERT-style encoders, decoders) computes the same
outputs at its real positions whatever padding follows them, if the padded positions have mask
0. So requests with 9 and 12 tokens can share one forward pass: every input with the sequence
axis is padded at the end to the longest length (mask 0, token ids 0), and each output axis
that follows the sequence length is cut back to the request's own length.

Which output axes follow the sequence length, and whether padding really leaves the outputs
unchanged, is not trusted from the input names: :func:`plan_padding` measures it once when the
server starts (a forward pass at 3 and at 5 positions, and one at 3 positions padded to 5). A
model whose outputs change when padded is served without padding (only identical lengths
batch), with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slimkit.model import Model, TensorSpec
from slimkit.runtime.base import Session

logger = logging.getLogger(__name__)
MASK_NAMES = ("attention_mask",)
PROBE = (3, 5)  # sequence lengths of the start-up check
PROBE_RTOL, PROBE_ATOL = 1e-3, 1e-4  # padded vs unpadded outputs (atol scaled by the output)


@dataclass(frozen=True)
class SequencePadding:
    """Which inputs are padded along which axis, and which output axes are cut back.

    ``inputs`` pairs an input name with its sequence axis; ``outputs`` gives, per model output,
    the axes whose size is the sequence length. A batch may hold at most ``max_padding`` of its
    sequence positions as padding.

    Example:
        >>> p = SequencePadding("attention_mask", (("input_ids", 1), ("attention_mask", 1)),
        ...                     ((),), 0.25)
        >>> ids = [np.array([[5, 6]]), np.array([[7, 8, 9]])]
        >>> masks = [np.ones((1, 2), np.int64), np.ones((1, 3), np.int64)]
        >>> j = p.join([{"input_ids": a, "attention_mask": m} for a, m in zip(ids, masks)])
        >>> j["input_ids"].tolist(), j["attention_mask"].tolist()
        ([[5, 6, 0], [7, 8, 9]], [[1, 1, 0], [1, 1, 1]])
    """

    mask: str
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[tuple[int, ...], ...]
    max_padding: float

    def length(self, inputs: dict[str, np.ndarray]) -> int:
        """The sequence length of one request."""
        return int(inputs[self.mask].shape[1])

    def key(self, inputs: dict[str, np.ndarray]) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Per-example shapes with the sequence axis left out: requests with equal keys can
        share a padded batch."""
        axes = dict(self.inputs)
        return tuple((k, tuple(-1 if i + 1 == axes.get(k) else d
                               for i, d in enumerate(v.shape[1:])))
                     for k, v in sorted(inputs.items()))

    def fits(self, positions: int, examples: int, longest: int) -> bool:
        """Whether a batch of ``examples`` padded to ``longest`` keeps the padding within
        bounds, given its ``positions`` real sequence positions."""
        return positions >= (1.0 - self.max_padding) * examples * longest - 1e-9

    def join(self, requests: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """One batch: every request's inputs along the batch axis, sequences padded with 0."""
        longest = max(self.length(r) for r in requests)
        axes = dict(self.inputs)
        joined = {}
        for name in requests[0]:
            parts = [r[name] for r in requests]
            if name in axes:
                parts = [_pad(p, axes[name], longest) for p in parts]
            joined[name] = np.concatenate(parts)
        return joined

    def cut(self, outputs: list[np.ndarray], start: int, size: int,
            length: int) -> list[np.ndarray]:
        """One request's outputs: its rows of the batch, its own sequence length."""
        out = []
        for o, axes in zip(outputs, self.outputs, strict=True):
            index: list[slice] = [slice(start, start + size)]
            index += [slice(0, length) if a in axes else slice(None) for a in range(1, o.ndim)]
            out.append(o[tuple(index)])
        return out


def _pad(array: np.ndarray, axis: int, length: int) -> np.ndarray:
    missing = length - array.shape[axis]
    if missing == 0:
        return array
    width = [(0, 0)] * array.ndim
    width[axis] = (0, missing)
    return np.pad(array, width)


def plan_padding(model: Model, session: Session, max_padding: float) -> SequencePadding | None:
    """How to pad ``model``'s sequence inputs, checked on the model; None where it cannot pad.

    None (only requests of identical lengths then batch together) when ``max_padding`` is 0,
    the model has no attention mask, an output's size depends on the sequence length otherwise
    than as an axis of that length, or the padded outputs differ from the unpadded ones.
    """
    found = _sequence_inputs(model.inputs)
    if max_padding <= 0 or found is None:
        return None
    mask, inputs = found
    try:
        with session.pinned():
            short, long = (session.run(_probe(model.inputs, inputs, n, n)) for n in PROBE)
            padded = session.run(_probe(model.inputs, inputs, PROBE[0], PROBE[1]))
    except Exception as exc:
        logger.warning("padding disabled: the start-up check failed (%s)", exc)
        return None
    outputs = _output_axes(short, long)
    if outputs is None:
        logger.warning("padding disabled: an output's shape depends on the sequence length in "
                       "a way that cannot be cut back per request")
        return None
    plan = SequencePadding(mask, inputs, outputs, max_padding)
    cut = plan.cut(padded, 0, 1, PROBE[0])
    if not all(_close(c, s) for c, s in zip(cut, short, strict=True)):
        logger.warning("padding disabled: the outputs of '%s' change when its inputs are padded "
                       "with %s=0; requests batch only with identical lengths", model.name, mask)
        return None
    return plan


def _sequence_inputs(specs: tuple[TensorSpec, ...]
                     ) -> tuple[str, tuple[tuple[str, int], ...]] | None:
    """(mask name, (input, sequence axis) pairs), or None for a model without a mask."""
    mask = next((s for s in specs if s.name in MASK_NAMES and len(s.shape) == 2
                 and isinstance(s.shape[1], str)), None)
    if mask is None:
        return None
    dim = mask.shape[1]
    pairs = []
    for s in specs:
        axes = [i for i, d in enumerate(s.shape) if i > 0 and d == dim]
        if len(axes) > 1:
            return None  # e.g. a (sequence x sequence) input: not padded here
        if axes:
            pairs.append((s.name, axes[0]))
    return mask.name, tuple(pairs)


def _probe(specs: tuple[TensorSpec, ...], inputs: tuple[tuple[str, int], ...], length: int,
           padded_to: int) -> dict[str, np.ndarray]:
    """One example with ``length`` real positions, padded to ``padded_to``."""
    rng = np.random.default_rng(0)
    axes = dict(inputs)
    out = {}
    for s in specs:
        shape = list(s.concrete_shape(1, dynamic=length))
        if s.name in MASK_NAMES:
            value = np.ones(shape, s.dtype)
        elif np.dtype(s.dtype).kind in "iu":
            value = rng.integers(0, s.high or 2, shape).astype(s.dtype) if s.high \
                else np.zeros(shape, s.dtype)
        else:
            value = rng.standard_normal(shape).astype(s.dtype)
        out[s.name] = _pad(value, axes[s.name], padded_to) if s.name in axes else value
    return out


def _output_axes(short: list[np.ndarray], long: list[np.ndarray]
                 ) -> tuple[tuple[int, ...], ...] | None:
    axes = []
    for a, b in zip(short, long, strict=True):
        if a.ndim != b.ndim or a.ndim == 0 or a.shape[0] != 1:
            return None
        changed = [i for i in range(1, a.ndim) if a.shape[i] != b.shape[i]]
        if any((a.shape[i], b.shape[i]) != PROBE for i in changed):
            return None
        axes.append(tuple(changed))
    return tuple(axes)


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    if got.shape != want.shape:
        return False
    if want.dtype.kind not in "fc":
        return bool(np.array_equal(got, want))
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    return bool(np.allclose(got, want, rtol=PROBE_RTOL, atol=PROBE_ATOL * scale))
