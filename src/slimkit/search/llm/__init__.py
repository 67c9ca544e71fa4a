"""The search over causal-LM compressions under a perplexity (or KL) budget: weight-only
int4/int8, W8A8, depth/width pruning, screened cheaply then measured. One verb,
:func:`search_llm`."""

from slimkit._lazy import lazy_exports

_API = {
    "search_llm": "slimkit.search.llm.api", "LLMSearchResult": "slimkit.search.llm.api",
    "LLMSearchConfig": "slimkit.search.llm.config",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports("slimkit.search.llm", _API, globals())
