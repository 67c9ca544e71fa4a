"""Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p
(nucleus). Pure functions over numpy arrays, seeded through the ``Generator`` passed in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimkit.errors import InputError


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
    """The next token id from one position's ``logits`` ``(vocab,)``.

    Example:
        >>> next_token(np.array([0.1, 2.0, -1.0]), SamplingConfig(), np.random.default_rng(0))
        1
    """
    if config.greedy:
        return int(np.argmax(logits))
    probs = filtered_probs(logits, config)
    return int(rng.choice(len(probs), p=probs))


def filtered_probs(logits: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """The sampling distribution after temperature, top-k and top-p (sums to 1)."""
    scaled = logits.astype(np.float64) / config.temperature
    if 0 < config.top_k < len(scaled):
        kth = np.partition(scaled, -config.top_k)[-config.top_k]
        scaled = np.where(scaled >= kth, scaled, -np.inf)
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if config.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[:int(np.searchsorted(cumulative, config.top_p - 1e-9)) + 1]
        mask = np.zeros_like(probs, dtype=bool)
        mask[keep] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return probs
