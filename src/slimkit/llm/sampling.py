"""Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p
(nucleus). Pure functions over numpy arrays, seeded through the ``Generator`` passed in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimkit.errors import InputError

NUCLEUS_CANDIDATES = 256  # top-p first looks among this many most likely tokens


@dataclass(frozen=True)
class SamplingConfig:
    """``temperature`` 0 is greedy (argmax); above 0, sample from the softmax of
    ``logits / temperature`` restricted to the ``top_k`` most likely tokens (0: all) and to the
    smallest set whose probability reaches ``top_p``.

    Example:
        >>> SamplingConfig(temperature=0.7, top_p=0.9).greedy
        False
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.temperature <= 100:
            raise InputError(f"temperature must be in [0, 100], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InputError(f"top_k must be >= 0, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def next_token(logits: np.ndarray, config: SamplingConfig, rng: np.random.Generator) -> int:
    """The next token id from one position's ``logits`` ``(vocab,)``: top-k and top-p look at
    a partial sort of the most likely tokens (linear time: a full sort of a 49k vocabulary per
    token and sequence costs more than a small model's decode step).

    Example:
        >>> next_token(np.array([0.1, 2.0, -1.0]), SamplingConfig(), np.random.default_rng(0))
        1
    """
    if config.greedy:
        return int(np.argmax(logits))
    tokens, probs = candidates(logits, config)
    return int(tokens[draw(probs, rng)])


def candidates(logits: np.ndarray, config: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, unnormalised probabilities) that sampling may pick, after temperature,
    top-k and top-p."""
    probs = softmax(logits.astype(np.float64) / config.temperature)
    tokens = np.arange(probs.size)
    if 0 < config.top_k < probs.size:
        tokens = np.argpartition(probs, probs.size - config.top_k)[probs.size - config.top_k:]
    if config.top_p < 1:
        kept, _ = nucleus(probs[tokens] / probs[tokens].sum(), config.top_p)
        tokens = tokens[kept]
    return tokens, probs[tokens]


def filtered_probs(logits: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """The whole sampling distribution (sums to 1): zero outside :func:`candidates`."""
    tokens, probs = candidates(logits, config)
    out = np.zeros(logits.shape[-1])
    out[tokens] = probs / probs.sum()
    return out


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
    # the token crossing top_p (a sum that reaches it but for float rounding counts as reaching)
    n = min(int(np.searchsorted(cumulative, top_p - 1e-9)) + 1, top.size)
    return top[:n], probs[top[:n]]


def draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with (unnormalised) weights ``probs``: inverse CDF, linear time."""
    cumulative = np.cumsum(probs)
    return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"),
                   probs.size - 1))
