"""The role continuous batching runs on: a :class:`DecodeEngine` holds the KV caches of a batch
of sequences and advances them together.

The scheduler (:mod:`slimkit.serve.llm.continuous`) owns the engine from one thread and calls, per
iteration: :meth:`~DecodeEngine.prefill` for the sequences it admits (their prompts run and
their caches join the batch), then :meth:`~DecodeEngine.decode` once for every sequence in the
batch (one new token each), and :meth:`~DecodeEngine.drop` for each sequence that finished or
whose client went away. Between two decode steps sequences join and leave: that is continuous
batching of decode steps. The engine knows nothing of tokenizers, sampling or HTTP: it maps
token ids to next-token logits and keeps the caches.

An engine for another runtime (ONNX Runtime with past key values) implements the same five
members; :class:`~slimkit.serve.llm.torch_engine.TorchDecodeEngine` is the PyTorch one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class DecodeEngine(Protocol):
    """A batch of sequences with their KV caches; called from one thread only.

    Contract (what the scheduler relies on):

    - ``prefill(prompts)`` starts new sequences, ``{sequence id: prompt token ids}`` (ids not
      in the batch yet, prompts of 1..``context_length`` tokens). It returns the logits of the
      token that follows each prompt, float32 of shape ``(len(prompts), vocab)``, rows in the
      mapping's order. Afterwards the sequences are in :attr:`sequences`.
    - ``decode(tokens)`` takes exactly one next token for *every* sequence in
      :attr:`sequences` (``{id: token id}``, any order), appends them to the caches and returns
      the logits that follow, ``(len(tokens), vocab)`` float32, rows in the mapping's order.
      A sequence holds at most ``context_length`` tokens (prompt + appended ones); the
      scheduler stops a sequence before that.
    - ``drop(seq_id)`` frees a sequence's cache at once (an unknown id is ignored).
    - ``cached_tokens()`` is the number of KV positions the engine holds now, padding
      included: 0 when no sequence is held (the leak check of the server's tests).
    - ``pinned()`` is entered once around the scheduler's loop (thread settings of the
      runtime; a no-op where the runtime fixes them at creation).

    Example:
        >>> isinstance(object(), DecodeEngine)
        False
    """

    @property
    def context_length(self) -> int:
        """Positions one sequence may hold (prompt and generated tokens)."""
        ...

    @property
    def sequences(self) -> tuple[int, ...]:
        """The ids of the sequences held, in batch order."""
        ...

    def prefill(self, prompts: Mapping[int, Sequence[int]]) -> np.ndarray: ...

    def decode(self, tokens: Mapping[int, int]) -> np.ndarray: ...

    def drop(self, seq_id: int) -> None: ...

    def cached_tokens(self) -> int: ...

    def pinned(self) -> contextlib.AbstractContextManager[None]: ...
