"""Timed generation on each runtime of bench_llm.py: time to first token and the seconds of
each later token, for one prompt, with exactly ``new`` greedy tokens (end-of-sequence ignored).

Each function returns ``(ttft_s, [step_s, ...])``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def time_hf_generate(hf: Any, prompt: list[int], new: int) -> tuple[float, list[float]]:
    """transformers' own ``generate`` (greedy, KV cache), timed by a streamer's callbacks."""
    import torch

    stamps: list[float] = []

    class Clock:
        def put(self, value: Any) -> None:
            stamps.append(time.perf_counter())

        def end(self) -> None:
            pass

    ids = torch.tensor([prompt])
    begin = time.perf_counter()
    with torch.no_grad():
        hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                    min_new_tokens=new, do_sample=False, streamer=Clock(),
                    pad_token_id=hf.config.eos_token_id)
    token_stamps = stamps[1:]  # the first put is the prompt
    return token_stamps[0] - begin, list(np.diff(token_stamps))


def time_engine(runtime: Any, prompt: list[int], new: int) -> tuple[float, list[float]]:
    """slimkit's engine (prefill, then one decode call per token)."""
    from slimkit.llm.engine import Engine

    state = Engine(runtime, stop_token_ids=()).run(prompt, new)
    return state.first_token_s, state.step_s


def genai_model(folder: Path, threads: int, scratch: Path) -> Any:
    """An ORT GenAI model of ``folder`` with ``threads`` intra-op threads: a scratch folder
    with a copy of genai_config.json and hard links to the other files (ONNX Runtime refuses
    external data reached through a symlink out of the model's folder)."""
    import json
    import os

    import onnxruntime_genai as og

    target = scratch / f"genai-{folder.parent.name}-{folder.name}-t{threads}"
    target.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        link = target / item.name
        if item.name != "genai_config.json" and not link.exists():
            os.link(item, link)
    config = json.loads((folder / "genai_config.json").read_text())
    options = config["model"]["decoder"]["session_options"]
    options.update({"intra_op_num_threads": threads, "inter_op_num_threads": 1})
    (target / "genai_config.json").write_text(json.dumps(config, indent=2))
    return og.Model(str(target))


def time_genai(model: Any, prompt: list[int], new: int) -> tuple[float, list[float]]:
    """ONNX Runtime GenAI's own generator (shared-buffer KV cache, C++ loop)."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    total = len(prompt) + new
    params.set_search_options(max_length=total, min_length=total, do_sample=False)
    generator = og.Generator(model, params)
    begin = time.perf_counter()
    generator.append_tokens(np.asarray(prompt, np.int32))
    generator.generate_next_token()
    ttft = time.perf_counter() - begin
    steps = []
    while not generator.is_done():
        t = time.perf_counter()
        generator.generate_next_token()
        steps.append(time.perf_counter() - t)
    return ttft, steps


def llama_cpp_model(gguf: str, threads: int, context: int, logits_all: bool = False) -> Any:
    from llama_cpp import Llama

    return Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=context,
                 n_batch=512, logits_all=logits_all, verbose=False)


def time_llama_cpp(llm: Any, prompt: list[int], new: int) -> tuple[float, list[float]]:
    """llama.cpp through llama-cpp-python's low-level eval (greedy argmax on its logits)."""
    llm.reset()
    begin = time.perf_counter()
    llm.eval(prompt)
    token = int(np.argmax(_last_logits(llm)))
    ttft = time.perf_counter() - begin
    steps = []
    for _ in range(new - 1):
        t = time.perf_counter()
        llm.eval([token])
        token = int(np.argmax(_last_logits(llm)))
        steps.append(time.perf_counter() - t)
    return ttft, steps


def _last_logits(llm: Any) -> np.ndarray:
    """The last evaluated position's logits (without logits_all, llama-cpp-python 0.3.x no
    longer copies them into ``scores``)."""
    return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))


def llama_cpp_perplexity(llm: Any, ids: np.ndarray, window: int) -> float:
    """Perplexity over disjoint windows, the same scoring as slimkit.llm.evaluate."""
    from slimkit.llm.evaluate import token_nll, windows

    nll, count = 0.0, 0
    for begin, end, first in windows(len(ids), window, window):
        llm.reset()
        llm.eval(ids[begin:end].tolist())
        logits = np.asarray(llm.scores[:end - begin])
        nll += float(token_nll(logits[first - 1 - begin:end - 1 - begin], ids[first:end]).sum())
        count += end - first
    return float(np.exp(nll / count))


def plain_onnx_export(hf: Any, builder_folder: Path, out: Path) -> Path:
    """The alternative exporter: ``torch.onnx.export`` (TorchScript) of the HF model with an
    explicit cache, same I/O names as the builder's graph, no fused operators. Correct for one
    unpadded sequence, which is all the benchmark feeds it."""
    import json

    import torch
    from transformers import DynamicCache

    layers = hf.config.num_hidden_layers

    class WithCache(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, input_ids: Any, attention_mask: Any, *past: Any) -> Any:
            cache = DynamicCache(config=hf.config)
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.hf(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                          use_cache=True)
            return (out.logits, *[t for layer in out.cache.layers
                                  for t in (layer.keys, layer.values)])

    kv = (hf.config.num_key_value_heads, hf.config.hidden_size // hf.config.num_attention_heads)
    past = [torch.zeros(1, kv[0], 5, kv[1]) for _ in range(2 * layers)]
    names = [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    outputs = ["logits"] + [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    axes = {"input_ids": {1: "sequence"}, "attention_mask": {1: "total"},
            **{n: {2: "past"} for n in names}}
    out.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(100, 1000, (1, 4))
    torch.onnx.export(WithCache(), (ids, torch.ones(1, 9, dtype=torch.int64), *past),
                      str(out / "model.onnx"), input_names=["input_ids", "attention_mask", *names],
                      output_names=outputs, dynamic_axes=axes, dynamo=False, opset_version=17)
    config = json.loads((builder_folder / "genai_config.json").read_text())
    config["search"]["past_present_share_buffer"] = False
    (out / "genai_config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((builder_folder / name).read_bytes())
    return out
