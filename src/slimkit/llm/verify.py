"""Check a generation runtime against a reference: logits on prefill and on decode steps with
a KV cache, and the greedy tokens, on prompts cut from real text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slimkit.errors import InputError, VerificationError
from slimkit.model import Model


@dataclass(frozen=True)
class VerifyConfig:
    """``prompts`` prompts of ``prompt_tokens`` tokens each, then ``decode_steps`` greedy
    steps. Logits pass when ``|a - b| <= atol + rtol * |b|`` everywhere (``b`` the reference);
    a greedy token may differ from the reference's only at a near-tie (top-2 gap <= ``atol``).
    """

    prompts: int = 2
    prompt_tokens: int = 24
    decode_steps: int = 16
    atol: float = 1e-3
    rtol: float = 1e-3
    text: str = "builtin:python-reference:evaluation"

    def __post_init__(self) -> None:
        if min(self.prompts, self.prompt_tokens, self.decode_steps) < 1:
            raise InputError("verification needs >= 1 prompt, prompt token and decode step")
        if self.atol < 0 or self.rtol < 0:
            raise InputError("verification tolerances must be >= 0")


def verify_generation(reference: Model, candidate: Model,
                      config: VerifyConfig | None = None) -> dict[str, Any]:
    """Compare ``candidate`` (e.g. an exported folder) with ``reference`` (its torch original),
    raising :class:`VerificationError` beyond tolerance; returns the measured differences.

    Each decode step feeds both runtimes the reference's greedy token (teacher forcing), so one
    near-tie does not make every later step differ.
    """
    from slimkit.llm.runtime import open_runtime

    config = config or VerifyConfig()
    ref, cand = open_runtime(reference), open_runtime(candidate)
    prompts = verification_prompts(reference, config, ref.vocab_size)
    worst, excess, mismatches, ties = 0.0, 0.0, 0, 0
    for prompt in prompts:
        for a, b in _paired_steps(ref, cand, prompt, config.decode_steps):
            diff = np.abs(b - a)
            worst = max(worst, float(diff.max()))
            excess = max(excess, float((diff - config.atol - config.rtol * np.abs(a)).max()))
            if int(a.argmax()) != int(b.argmax()):
                top2 = np.sort(a)[-2:]
                tie = float(top2[1] - top2[0]) <= config.atol
                ties += tie
                mismatches += not tie
    result = {"prompts": len(prompts), "prompt_tokens": config.prompt_tokens,
              "decode_steps": config.decode_steps, "max_abs_logit_diff": worst,
              "atol": config.atol, "rtol": config.rtol, "greedy_mismatches": mismatches,
              "near_ties": ties, "same_greedy_tokens": mismatches == 0,
              "runtimes": [ref.name, cand.name]}
    if excess > 0 or mismatches:
        raise VerificationError(
            f"'{candidate.source}' differs from '{reference.source}': max abs logit difference "
            f"{worst:.3g} (atol {config.atol:g}, rtol {config.rtol:g}), {mismatches} greedy "
            f"token(s) differ; the export is not kept")
    return result


def _paired_steps(ref: Any, cand: Any, prompt: list[int], steps: int) -> Any:
    """Yield (reference logits, candidate logits) for the prefill and ``steps`` decode steps."""
    a, cache_a = ref.prefill(prompt)
    b, cache_b = cand.prefill(prompt)
    yield a, b
    for _ in range(steps):
        token = int(a.argmax())
        (a,), (cache_a,) = ref.decode([token], [cache_a])
        (b,), (cache_b,) = cand.decode([token], [cache_b])
        yield a, b


def verification_prompts(model: Model, config: VerifyConfig, vocab: int) -> list[list[int]]:
    """Prompts cut from real text when the model has a tokenizer; seeded random ids otherwise."""
    if model.tokenizer is None:
        rng = np.random.default_rng(0)
        return [rng.integers(0, vocab, config.prompt_tokens).tolist()
                for _ in range(config.prompts)]
    from slimkit.llm.text import load_text

    ids = model.tokenizer(load_text(config.text).text[:50_000])["input_ids"]
    stride = max(config.prompt_tokens, len(ids) // max(config.prompts, 1))
    return [list(ids[i * stride:i * stride + config.prompt_tokens]) for i in range(config.prompts)]
