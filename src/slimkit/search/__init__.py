"""Automatic compression under a metric budget: a cached sensitivity scan, resumable Optuna
proxy trials (in process or on Ray), and the promising points compressed for real, verified and
measured in ONNX Runtime."""

from slimkit.search.api import SearchResult, search
from slimkit.search.config import ExecutorKind, Objective, SamplerKind, SearchConfig, parse_duration

__all__ = ["ExecutorKind", "Objective", "SamplerKind", "SearchConfig", "SearchResult",
           "parse_duration", "search"]
