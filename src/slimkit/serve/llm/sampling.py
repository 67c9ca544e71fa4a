"""How the next token is chosen from a sequence's logits: greedy, temperature, nucleus (top-p).

Sampling is on the scheduler thread, in NumPy, per sequence, with the request's own generator
(``seed``), so a seeded request draws the same tokens whoever shares its batch (up to the
float rounding of batched logits). The engine returns logits only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimkit.errors import InputError

GREEDY_BELOW = 1e-5  # temperatures under this pick the most likely token
NUCLEUS_CANDIDATES = 256  # top-p first looks among this many most likely tokens


@dataclass(frozen=True)
class SamplingParams:
    """How one request generates: at most ``max_tokens`` new tokens; ``temperature`` 0 is
    greedy; ``top_p`` < 1 samples from the smallest set of tokens holding that much
    probability; ``seed`` makes sampling repeatable; a token of ``stop_token_ids`` (end of
    sequence) ends the generation and is not returned.

    Example:
        >>> SamplingParams(max_tokens=8, temperature=0.0).greedy
        True
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) \
                or self.max_tokens < 1:
            raise InputError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not 0 <= self.temperature <= 2:
            raise InputError(f"temperature must be in [0, 2], got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def generator(self) -> np.random.Generator:
        """The request's random generator (seeded when ``seed`` is given)."""
        return np.random.default_rng(self.seed)


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """The next token id for one sequence's ``logits`` (shape ``(vocab,)``).

    Example:
        >>> logits = np.array([0.0, 3.0, 1.0], np.float32)
        >>> sample(logits, SamplingParams(temperature=0.0), np.random.default_rng(0))
        1
        >>> sample(logits, SamplingParams(top_p=0.5), np.random.default_rng(0))  # only 1 left
        1
    """
    if params.greedy:
        return int(np.argmax(logits))
    probs = softmax(logits.astype(np.float64) / params.temperature)
    if params.top_p < 1:
        tokens, kept = nucleus(probs, params.top_p)
        return int(tokens[_draw(kept, rng)])
    return _draw(probs, rng)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def nucleus(probs: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, their probabilities) of the smallest most-likely set holding ``top_p``.

    Looks among the ``NUCLEUS_CANDIDATES`` most likely tokens first (a partial sort, linear
    time) and sorts the whole vocabulary only when they hold less than ``top_p``.

    Example:
        >>> nucleus(np.array([0.1, 0.6, 0.3]), 0.8)[0].tolist()
        [1, 2]
    """
    k = min(NUCLEUS_CANDIDATES, probs.size)
    top = np.argpartition(probs, probs.size - k)[probs.size - k:] if k < probs.size \
        else np.arange(probs.size)
    top = top[np.argsort(-probs[top], kind="stable")]
    if probs[top].sum() < top_p and k < probs.size:
        top = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[top])
    n = min(int(np.searchsorted(cumulative, top_p)) + 1, top.size)  # the token crossing top_p
    return top[:n], probs[top[:n]]


def _draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with (unnormalised) weights ``probs``: inverse CDF, linear time."""
    cumulative = np.cumsum(probs)
    return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"),
                   probs.size - 1))
