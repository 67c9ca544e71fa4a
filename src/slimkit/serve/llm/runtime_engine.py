"""A :class:`~slimkit.serve.llm.engine.DecodeEngine` over any causal-LM runtime of
``slimkit.llm`` (an exported generation folder in ONNX Runtime): the runtime keeps one KV cache
per sequence and decodes sequences of different lengths in one batched call, so the
scheduler's continuous batching runs on it unchanged."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np


class RuntimeDecodeEngine:
    """Sequences by id over a ``slimkit.llm.runtime.CausalLMRuntime``.

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.llm.runtime import open_runtime
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> lm = load_causal_lm(tiny_llama_folder(pathlib.Path(tempfile.mkdtemp())))
        >>> engine = RuntimeDecodeEngine(open_runtime(lm, "torch"))
        >>> engine.prefill({7: [1, 2, 3]}).shape, engine.cached_tokens()
        ((1, 320), 3)
    """

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._caches: dict[int, Any] = {}

    @property
    def context_length(self) -> int:
        return int(self.runtime.context_length)

    @property
    def sequences(self) -> tuple[int, ...]:
        return tuple(self._caches)

    def prefill(self, prompts: Mapping[int, Sequence[int]]) -> np.ndarray:
        rows = []
        for seq_id, ids in prompts.items():
            logits, cache = self.runtime.prefill(list(ids))
            self._caches[seq_id] = cache
            rows.append(np.asarray(logits, np.float32))
        return np.stack(rows)

    def decode(self, tokens: Mapping[int, int]) -> np.ndarray:
        ids = list(tokens)
        logits, caches = self.runtime.decode([tokens[i] for i in ids],
                                             [self._caches[i] for i in ids])
        self._caches.update(zip(ids, caches, strict=True))
        return np.asarray(logits, np.float32)

    def drop(self, seq_id: int) -> None:
        self._caches.pop(seq_id, None)

    def cached_tokens(self) -> int:
        return sum(int(cache.length) for cache in self._caches.values())

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        yield  # ONNX Runtime's threads are fixed when the session is created
