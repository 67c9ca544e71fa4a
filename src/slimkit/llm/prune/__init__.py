"""Pruning of decoder LMs: unstructured and N:M (magnitude, Wanda, SparseGPT; no speed-up on
dense runtimes, a smaller compressed file), width (attention heads and FFN neurons, grouped-query
attention kept consistent) and depth (whole decoder layers by block influence or angular
distance). One verb, :func:`prune_llm`, with one frozen config, :class:`LLMPruneConfig`."""

from slimkit.llm.prune.api import METHODS, LLMPruneResult, prune_llm
from slimkit.llm.prune.config import (
    DepthCriterion,
    HeadUnit,
    LLMPruneConfig,
    LLMPruneMethod,
)

__all__ = ["METHODS", "DepthCriterion", "HeadUnit", "LLMPruneConfig", "LLMPruneMethod",
           "LLMPruneResult", "prune_llm"]
