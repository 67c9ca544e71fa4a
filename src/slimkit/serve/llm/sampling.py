"""How the next token is chosen from a sequence's logits: greedy, temperature, nucleus (top-p).

Sampling is on the scheduler thread, in NumPy, per sequence, with the request's own generator
(``seed``), so a seeded request draws the same tokens whoever shares its batch (up to the
float rounding of batched logits). The engine returns logits only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimkit.errors import InputError
from slimkit.llm.sampling import SamplingConfig, next_token

GREEDY_BELOW = 1e-5  # temperatures under this pick the most likely token


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
    return next_token(logits, SamplingConfig(params.temperature, params.top_p), rng)


