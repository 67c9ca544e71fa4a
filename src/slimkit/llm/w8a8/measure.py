"""Prefill and decode speed side by side in one process: the int8 folder, the fp32 folder it
came from, and torch's dynamic int8 (``torch.ao.quantization.quantize_dynamic`` on every
Linear: per-tensor weights and activations, no smoothing; the anchor of issue 18), all run by
slimkit's engine with the same prompt, greedy, exactly ``new_tokens`` tokens, rounds
interleaved after one warm-up, medians reported.

Prefill ms is the time to the first token (prefill plus choosing it); decode tokens/s is one
over the median per-token step time (the 90th percentile of step times is reported too).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from slimkit.llm.runtime import CausalLMRuntime, torch_threads
from slimkit.model import Model

TORCH_INT8 = "torch dynamic int8 (no smoothing)"


def torch_dynamic_int8(model: Model) -> Model:
    """A copy of a torch causal LM with every Linear in torch's dynamic int8."""
    import torch

    from slimkit.llm.load import CausalLM, hf_module

    hf = copy.deepcopy(hf_module(model))
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated, still works
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(hf, {torch.nn.Linear},
                                                           dtype=torch.qint8)
    return replace(model, module=CausalLM(quantized).eval(), name=f"{model.name}-torch-int8")


def prompt_ids(model: Model, text: str, tokens: int) -> list[int]:
    """``tokens`` ids cut from ``text`` (past its first 1,000 tokens when it is long enough)."""
    from slimkit.llm.evaluate import token_ids
    from slimkit.llm.text import load_text

    ids = token_ids(model.tokenizer, load_text(text).text, 1000 + tokens)
    start = max(0, min(1000, len(ids) - tokens))
    return ids[start:start + tokens].tolist()  # type: ignore[no-any-return]


def measure(rows: dict[str, CausalLMRuntime], prompt: list[int], new_tokens: int,
            rounds: int, threads: int) -> dict[str, dict[str, Any]]:
    """Median prefill ms and decode tokens/s of each runtime, rounds interleaved."""
    from slimkit.llm.engine import Engine

    engines = {name: Engine(rt, stop_token_ids=()) for name, rt in rows.items()}
    samples: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in rows}
    with torch_threads(threads):
        for engine in engines.values():
            engine.run(prompt, 4)  # warm-up: sessions, caches, first-call allocations
        for _ in range(rounds):
            for name, engine in engines.items():
                state = engine.run(prompt, new_tokens)
                samples[name][0].append(state.first_token_s)
                samples[name][1].extend(state.step_s)
    return {name: _summary(*samples[name]) for name in rows}


def _summary(prefill: list[float], steps: list[float]) -> dict[str, Any]:
    return {"prefill_ms": round(float(np.median(prefill)) * 1000, 1),
            "decode_tok_s": round(1 / float(np.median(steps)), 2),
            "decode_tok_s_p90": round(1 / float(np.percentile(steps, 90)), 2),
            "rounds": len(prefill), "steps": len(steps)}


def ratios(speed: dict[str, dict[str, Any]], row: str, base: str) -> dict[str, float]:
    """How many times faster ``row`` is than ``base`` at prefill and decode."""
    a, b = speed[row], speed[base]
    return {"prefill_speedup": round(b["prefill_ms"] / a["prefill_ms"], 2),
            "decode_speedup": round(a["decode_tok_s"] / b["decode_tok_s"], 2)}
