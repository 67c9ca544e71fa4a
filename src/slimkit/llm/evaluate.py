"""How well a causal LM predicts real text, and how close it stays to a reference model:
perplexity over windows of a text, KL divergence of the next-token distributions and top-1
(greedy) agreement, on any runtime (a torch model, an exported folder, a compressed graph).

Windows: the text's first ``max_tokens`` tokens (after ``skip_tokens``) are cut into windows
of ``window`` tokens starting every ``stride`` tokens; each token is scored once, by the first
window that sees it with context (the first token of the text is never scored).
``stride == window`` gives disjoint windows (the anchors' 8 windows of 512 over 4,096 tokens).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimkit.errors import DataError, InputError
from slimkit.llm.runtime import CausalLMRuntime, open_runtime
from slimkit.llm.text import load_text
from slimkit.model import Model
from slimkit.progress import progress


@dataclass(frozen=True)
class PerplexityConfig:
    """Which text and how it is windowed (see the module docstring)."""

    text: str = "builtin:python-reference:evaluation"
    window: int = 512
    stride: int = 512
    max_tokens: int = 4096
    skip_tokens: int = 0  # tokens left out before the first window (a disjoint later span)

    def __post_init__(self) -> None:
        if self.window < 2 or self.max_tokens < 2:
            raise InputError("window and max_tokens must be >= 2 tokens")
        if self.skip_tokens < 0:
            raise InputError(f"skip_tokens must be >= 0, got {self.skip_tokens}")
        if not 1 <= self.stride <= self.window:
            raise InputError(f"stride must be in [1, window={self.window}], got {self.stride}")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log(softmax(logits))`` along the last axis, in float64."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))  # type: ignore[no-any-return]


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under the logits at the same row.

    Example:
        >>> float(token_nll(np.zeros((1, 4)), np.array([2]))[0]) == math.log(4)
        True
    """
    return -np.take_along_axis(log_softmax(logits), targets[:, None], axis=-1)[:, 0]


def kl_divergence(reference: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """``KL(p_reference || p)`` per row of two logit arrays ``(positions, vocab)``, in nats."""
    log_p, log_q = log_softmax(reference), log_softmax(logits)
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)  # type: ignore[no-any-return]


def windows(n_tokens: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """``(begin, end, first_scored)``: the tokens ``[first_scored, end)`` are scored from the
    window ``[begin, end)``, each at most once; a window's own first token has no context in
    it and is scored only by an earlier overlapping window.

    Example:
        >>> list(windows(10, 4, 4))
        [(0, 4, 1), (4, 8, 5), (8, 10, 9)]
    """
    scored_to, begin = 1, 0
    while scored_to < n_tokens and begin < n_tokens - 1:
        end = min(begin + window, n_tokens)
        first = max(scored_to, begin + 1)
        if first < end:
            yield begin, end, first
        scored_to = end
        begin += stride


def perplexity(model: Model | CausalLMRuntime, config: PerplexityConfig | None = None, *,
               runtime: str | None = None, threads: int | None = None,
               tokenizer: Any = None) -> dict[str, Any]:
    """Perplexity of ``model`` on ``config.text``.

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> m = load_causal_lm(tiny_llama_folder(pathlib.Path(tempfile.mkdtemp())))
        >>> r = perplexity(m, PerplexityConfig(window=64, stride=64, max_tokens=256))
        >>> r["tokens_scored"], r["windows"]
        (252, 4)
    """
    return compare(model, None, config, runtime=runtime, threads=threads, tokenizer=tokenizer)


def compare(model: Model | CausalLMRuntime, reference: Model | CausalLMRuntime | None,
            config: PerplexityConfig | None = None, *, runtime: str | None = None,
            threads: int | None = None, tokenizer: Any = None) -> dict[str, Any]:
    """Perplexity of ``model`` and, with a ``reference``, its perplexity too, the mean and
    90th-percentile KL divergence ``KL(reference || model)`` of next-token distributions and
    the top-1 agreement, over the same scored tokens. ``runtime`` applies to ``model``; the
    reference runs on its own default runtime."""
    config = config or PerplexityConfig()
    tokenizer = tokenizer or _tokenizer(model, reference)
    text = load_text(config.text)
    ids = token_ids(tokenizer, text.text, config.skip_tokens + config.max_tokens)
    ids = ids[config.skip_tokens:]
    if len(ids) < 2:
        raise DataError(f"text '{config.text}' has fewer than 2 tokens"
                        + (f" after the first {config.skip_tokens}" if config.skip_tokens else ""))
    rt = _runtime(model, runtime, threads)
    ref = None if reference is None else _runtime(reference, None, threads)
    if ref is not None and ref.vocab_size != rt.vocab_size:
        raise InputError(f"the models' vocabularies differ ({rt.vocab_size} vs "
                         f"{ref.vocab_size} tokens); KL needs the same tokenizer")
    if int(ids.max()) >= rt.vocab_size:
        raise InputError(f"the tokenizer gives token ids up to {int(ids.max())} but the model "
                         f"has {rt.vocab_size} tokens: they do not belong together")
    sums = _Sums()
    spans = list(windows(len(ids), config.window, config.stride))
    for begin, end, first in progress(spans, "scoring text", total=len(spans)):
        chunk = ids[None, begin:end]
        targets = ids[first:end]
        rows = slice(first - 1 - begin, end - 1 - begin)
        logits = rt.forward(chunk)[0, rows]
        ref_logits = None if ref is None else ref.forward(chunk)[0, rows]
        sums.add(logits, targets, ref_logits)
    return {"text": text.describe(), "tokens": len(ids), "tokens_scored": sums.count,
            "window": config.window, "stride": config.stride, "windows": len(spans),
            "runtime": rt.name, **sums.result()}


def token_ids(tokenizer: Any, text: str, max_tokens: int) -> np.ndarray:
    """The first ``max_tokens`` token ids of ``text``, tokenizing only a prefix long enough
    (about 16 characters a token first, all of it if that falls short)."""
    ids = tokenizer(text[:max_tokens * 16])["input_ids"]
    if len(ids) <= max_tokens and len(text) > max_tokens * 16:
        ids = tokenizer(text)["input_ids"]
    return np.asarray(ids[:max_tokens], np.int64)


class _Sums:
    def __init__(self) -> None:
        self.nll, self.ref_nll, self.count = 0.0, 0.0, 0
        self.kl: list[np.ndarray] = []
        self.agree = 0

    def add(self, logits: np.ndarray, targets: np.ndarray, ref: np.ndarray | None) -> None:
        self.nll += float(token_nll(logits, targets).sum())
        self.count += len(targets)
        if ref is not None:
            self.ref_nll += float(token_nll(ref, targets).sum())
            self.kl.append(kl_divergence(ref, logits))
            self.agree += int((ref.argmax(-1) == logits.argmax(-1)).sum())

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"perplexity": math.exp(self.nll / self.count)}
        if self.kl:
            kl = np.concatenate(self.kl)
            ref_ppl = math.exp(self.ref_nll / self.count)
            out.update({"reference_perplexity": ref_ppl,
                        "perplexity_change": out["perplexity"] / ref_ppl - 1,
                        "kl_mean": float(kl.mean()), "kl_p90": float(np.quantile(kl, 0.9)),
                        "top1_agreement": self.agree / self.count})
        return out


def _runtime(model: Model | CausalLMRuntime, runtime: str | None,
             threads: int | None) -> CausalLMRuntime:
    if isinstance(model, Model):
        return open_runtime(model, runtime, threads)  # type: ignore[no-any-return]
    return model


def _tokenizer(model: Any, reference: Any) -> Any:
    for candidate in (reference, model):
        tokenizer = getattr(candidate, "tokenizer", None)
        if tokenizer is not None:
            return tokenizer
    raise InputError("scoring text needs a tokenizer: the model (or the reference) has none")
