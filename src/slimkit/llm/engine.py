"""The generation loop as a reusable engine: prefill a prompt into a sequence state, then
advance any number of states one token per :meth:`Engine.step` (one batched decode call).

A single generation is ``start`` then ``step`` until done; a server's continuous batching keeps
a list of live states, adds new ones as requests arrive (``start``) and steps them together.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimkit.errors import InputError
from slimkit.llm.runtime import CausalLMRuntime, KVCache
from slimkit.llm.sampling import SamplingConfig, next_token


@dataclass(eq=False)  # states are compared by identity
class SequenceState:
    """One generation in flight: its tokens, KV cache, sampler and why it stopped (if it did)."""

    prompt: list[int]
    max_new_tokens: int
    sampling: SamplingConfig
    rng: np.random.Generator
    cache: KVCache | None = None
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (a stop token), "length" (limit or context)
    first_token_s: float = 0.0  # seconds from start to the first token
    step_s: list[float] = field(default_factory=list)  # seconds of each later token

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def new_tokens(self) -> list[int]:
        """Generated tokens without a final stop token."""
        return self.generated[:-1] if self.finish_reason == "stop" else list(self.generated)


class Engine:
    """Generation on a :class:`CausalLMRuntime`.

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.llm.runtime import open_runtime
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> m = load_causal_lm(tiny_llama_folder(pathlib.Path(tempfile.mkdtemp())))
        >>> engine = Engine(open_runtime(m), stop_token_ids=())
        >>> len(list(engine.stream([5, 6, 7], max_new_tokens=4)))
        4
    """

    def __init__(self, runtime: CausalLMRuntime, stop_token_ids: Sequence[int] = ()) -> None:
        self.runtime = runtime
        self.stop_token_ids = frozenset(int(t) for t in stop_token_ids)

    def start(self, prompt: Sequence[int], max_new_tokens: int = 128,
              sampling: SamplingConfig | None = None) -> SequenceState:
        """Prefill ``prompt`` and choose the first new token."""
        if not prompt:
            raise InputError("the prompt has no tokens")
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if len(prompt) >= self.runtime.context_length:
            raise InputError(f"the prompt has {len(prompt)} tokens; the model's context is "
                             f"{self.runtime.context_length} tokens: shorten it or truncate")
        sampling = sampling or SamplingConfig()
        state = SequenceState(list(prompt), max_new_tokens, sampling,
                              np.random.default_rng(sampling.seed))
        begin = time.perf_counter()
        logits, state.cache = self.runtime.prefill(state.prompt)
        self._accept(state, logits)
        state.first_token_s = time.perf_counter() - begin
        return state

    def step(self, states: Sequence[SequenceState]) -> list[int | None]:
        """Advance every unfinished state by one token in one decode call; the new token of
        each state (None for states that were already done)."""
        live = [s for s in states if not s.done]
        if not live:
            return [None] * len(states)
        begin = time.perf_counter()
        logits, caches = self.runtime.decode([s.generated[-1] for s in live],
                                             [s.cache for s in live])  # type: ignore[misc]
        seconds = time.perf_counter() - begin
        for state, row, cache in zip(live, logits, caches, strict=True):
            state.cache = cache
            self._accept(state, row)
            state.step_s.append(seconds)
        stepped = {id(s) for s in live}
        return [s.generated[-1] if id(s) in stepped else None for s in states]

    def stream(self, prompt: Sequence[int], max_new_tokens: int = 128,
               sampling: SamplingConfig | None = None) -> Iterator[int]:
        """The new tokens of one generation as they come (a final stop token is not yielded)."""
        state = self.start(prompt, max_new_tokens, sampling)
        yield from self.drain(state)

    def run(self, prompt: Sequence[int], max_new_tokens: int = 128,
            sampling: SamplingConfig | None = None) -> SequenceState:
        """One generation to the end; the finished state (tokens and timings)."""
        state = self.start(prompt, max_new_tokens, sampling)
        for _ in self.drain(state):
            pass
        return state

    def drain(self, state: SequenceState) -> Iterator[int]:
        """Step ``state`` alone to its end, yielding its new tokens as they come (those it
        already has first)."""
        sent = 0
        while True:
            tokens = state.new_tokens
            yield from tokens[sent:]
            sent = len(tokens)
            if state.done:
                return
            self.step([state])

    def _accept(self, state: SequenceState, logits: Any) -> None:
        token = next_token(np.asarray(logits), state.sampling, state.rng)
        state.generated.append(token)
        if token in self.stop_token_ids:
            state.finish_reason = "stop"
        elif (len(state.generated) >= state.max_new_tokens
              or len(state.prompt) + len(state.generated) >= self.runtime.context_length):
            state.finish_reason = "length"
