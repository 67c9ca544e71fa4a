"""Causal LMs behind one small interface, in PyTorch or ONNX Runtime: full-sequence logits
(for evaluation), prefill of a prompt and decode steps on a per-sequence KV cache.

The generation engine (:mod:`slimkit.llm.engine`), the evaluation (:mod:`slimkit.llm.evaluate`),
the export verification and a server's continuous batching all run on :class:`CausalLMRuntime`;
a new runtime (OpenVINO, a quantized graph) only implements it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from slimkit.errors import InputError, RuntimeUnavailableError
from slimkit.llm.graph import LOGITS_TO_KEEP
from slimkit.model import Model, Task
from slimkit.registry import Registry


@runtime_checkable
class KVCache(Protocol):
    """The keys and values of one sequence; ``length`` tokens are cached."""

    length: int


@runtime_checkable
class CausalLMRuntime(Protocol):
    """What generation, evaluation and batching need from a causal LM."""

    name: str
    context_length: int
    vocab_size: int

    def forward(self, input_ids: np.ndarray) -> np.ndarray:
        """Logits ``(batch, sequence, vocab)`` of ``input_ids`` ``(batch, sequence)``, no cache."""
        ...

    def prefill(self, token_ids: Sequence[int]) -> tuple[np.ndarray, KVCache]:
        """The last position's logits ``(vocab,)`` and a new cache holding ``token_ids``."""
        ...

    def decode(self, tokens: Sequence[int],
               caches: Sequence[KVCache]) -> tuple[np.ndarray, list[KVCache]]:
        """One step for several sequences: token ``i`` follows ``caches[i]``; logits
        ``(len(tokens), vocab)`` and the caches extended by one token."""
        ...


RUNTIMES: Registry[Any] = Registry("causal-LM runtime")
# the KV cache's element type, from the graph's first past input (int8: slimkit.llm.w8a8)
KV_DTYPES: dict[str, Any] = {"tensor(float16)": np.float16, "tensor(int8)": np.int8}


def open_runtime(model: Model, runtime: str | None = None, threads: int | None = None) -> Any:
    """A :class:`CausalLMRuntime` for ``model``: ``torch`` for a PyTorch model, ``onnxruntime``
    for an exported generation folder (the default follows the model).

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> rt = open_runtime(load_causal_lm(tiny_llama_folder(pathlib.Path(tempfile.mkdtemp()))))
        >>> logits, cache = rt.prefill([1, 2, 3])
        >>> logits.shape, cache.length
        ((320,), 3)
    """
    if model.task != Task.CAUSAL_LM:
        raise InputError(f"'{model.source}' is not a causal language model; give a Hugging "
                         "Face *ForCausalLM folder, a .gguf file, builtin:smollm2 or an exported "
                         "generation folder")
    name = runtime or ("torch" if model.module is not None else "onnxruntime")
    return RUNTIMES.get(name)(model, threads)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block on ``threads`` torch threads, restoring the process setting after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class TorchCache:
    past: Any  # a transformers Cache, extended in place
    length: int


@RUNTIMES.register("torch")
class TorchCausalLM:
    """A transformers ``*ForCausalLM`` with its own ``DynamicCache`` per sequence."""

    def __init__(self, model: Model, threads: int | None = None) -> None:
        from slimkit.llm.load import hf_module

        self.hf = hf_module(model)
        parameters = inspect.signature(self.hf.forward).parameters
        # transformers 5.2x renamed past_key_values to cache (the old name warns)
        self.cache_kw = "cache" if "cache" in parameters else "past_key_values"
        self.last_only = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
        self.threads = threads
        self.name = "torch"
        self.context_length = int(model.meta.get("context_length", 2048))
        self.vocab_size = int(self.hf.config.vocab_size)

    def _cache(self, out: Any) -> Any:
        return out.get("cache") if "cache" in out else out.past_key_values

    @torch.no_grad()
    def forward(self, input_ids: np.ndarray) -> np.ndarray:
        with torch_threads(self.threads):
            out = self.hf(input_ids=torch.from_numpy(np.asarray(input_ids, np.int64)),
                          use_cache=False)
        return out.logits.float().numpy()  # type: ignore[no-any-return]

    @torch.no_grad()
    def prefill(self, token_ids: Sequence[int]) -> tuple[np.ndarray, TorchCache]:
        ids = torch.tensor([list(token_ids)], dtype=torch.int64)
        with torch_threads(self.threads):
            out = self.hf(input_ids=ids, use_cache=True, **self.last_only)
        return out.logits[0, -1].float().numpy(), TorchCache(self._cache(out), len(token_ids))

    @torch.no_grad()
    def decode(self, tokens: Sequence[int],
               caches: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
        """Sequences are stepped one after the other (HF caches of different lengths do not
        stack without padding); the ONNX Runtime path batches them."""
        rows = []
        with torch_threads(self.threads):
            for token, cache in zip(tokens, caches, strict=True):
                ids = torch.tensor([[token]], dtype=torch.int64)
                position = torch.tensor([cache.length])
                out = self.hf(input_ids=ids, use_cache=True, cache_position=position,
                              **{self.cache_kw: cache.past})
                rows.append(out.logits[0, -1].float().numpy())
                cache.past, cache.length = self._cache(out), cache.length + 1
        return np.stack(rows), list(caches)


@dataclass
class OrtCache:
    layers: list[np.ndarray]  # per layer: key, value, each (1, kv_heads, length, head_size)
    length: int


@RUNTIMES.register("onnxruntime")
class OrtCausalLM:
    """An exported generation folder (GenAI layout) run with ONNX Runtime's Python API."""

    def __init__(self, model: Model, threads: int | None = None) -> None:
        if model.onnx_path is None:
            raise InputError(f"'{model.source}' is a PyTorch model; export it first "
                             "(slimkit export MODEL -o FOLDER) or use --runtime torch")
        import onnxruntime as ort

        decoder = model.meta["genai_config"]["model"]["decoder"]
        self.layers = int(decoder["num_hidden_layers"])
        self.kv_shape = (int(decoder["num_key_value_heads"]), int(decoder["head_size"]))
        self.names = _io_names(decoder, self.layers)
        self.session = ort.InferenceSession(str(model.onnx_path), ort_options(threads),
                                            providers=["CPUExecutionProvider"])
        inputs = {i.name for i in [*self.session.get_inputs(),
                                   *self.session.get_overridable_initializers()]}
        self.keep_input = LOGITS_TO_KEEP if LOGITS_TO_KEEP in inputs else None
        self.kv_dtype = KV_DTYPES.get(self.session.get_inputs()[2].type, np.float32)
        self.name = "onnxruntime"
        self.context_length = int(model.meta.get("context_length", 2048))
        self.vocab_size = int(self.session.get_outputs()[0].shape[-1])

    def _run(self, ids: np.ndarray, mask: np.ndarray, past: Sequence[np.ndarray],
             all_logits: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {self.names["input_ids"]: ids, self.names["attention_mask"]: mask}
        if all_logits and self.keep_input:
            feeds[self.keep_input] = np.array([ids.shape[1]], np.int64)
        feeds.update(zip(self.names["past"], past, strict=True))
        out = self.session.run([self.names["logits"], *self.names["present"]], feeds)
        return out[0], out[1:]

    def _empty(self, batch: int) -> list[np.ndarray]:
        empty = np.zeros((batch, self.kv_shape[0], 0, self.kv_shape[1]), self.kv_dtype)
        return [empty] * (2 * self.layers)

    def forward(self, input_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(input_ids, np.int64)
        logits, _ = self._run(ids, np.ones_like(ids), self._empty(len(ids)), all_logits=True)
        return logits.astype(np.float32, copy=False)

    def prefill(self, token_ids: Sequence[int]) -> tuple[np.ndarray, OrtCache]:
        ids = np.asarray([list(token_ids)], np.int64)
        logits, present = self._run(ids, np.ones_like(ids), self._empty(1))
        return logits[0, -1].astype(np.float32), OrtCache(present, len(token_ids))

    def decode(self, tokens: Sequence[int],
               caches: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
        """Several sequences in one run: caches are right-padded to the longest and the mask
        gives each its own length (GroupQueryAttention reads lengths from the mask)."""
        lengths = [c.length for c in caches]
        longest = max(lengths)
        ids = np.asarray(tokens, np.int64).reshape(-1, 1)
        mask = np.zeros((len(caches), longest + 1), np.int64)
        for row, length in enumerate(lengths):
            mask[row, :length + 1] = 1
        past = caches[0].layers if len(caches) == 1 else _stack(caches, longest)
        logits, present = self._run(ids, mask, past)
        out = []
        for row, cache in enumerate(caches):
            keep = cache.length + 1
            layers = present if len(caches) == 1 else [p[row:row + 1, :, :keep] for p in present]
            out.append(OrtCache(layers, keep))
        return logits[:, -1].astype(np.float32), out


def ort_options(threads: int | None) -> Any:
    """Session options: ``threads`` intra-op threads (all cores when None), one inter-op
    thread, every graph optimisation, warnings only."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or 0
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def _stack(caches: Sequence[Any], longest: int) -> list[np.ndarray]:
    stacked = []
    for i in range(len(caches[0].layers)):
        first = caches[0].layers[i]
        buf = np.zeros((len(caches), first.shape[1], longest, first.shape[3]), first.dtype)
        for row, cache in enumerate(caches):
            buf[row, :, :cache.length] = cache.layers[i][0]
        stacked.append(buf)
    return stacked


def _io_names(decoder: dict[str, Any], layers: int) -> dict[str, Any]:
    inputs, outputs = decoder.get("inputs", {}), decoder.get("outputs", {})
    past = [inputs.get(k, d) % i for i in range(layers) for k, d in
            (("past_key_names", "past_key_values.%d.key"),
             ("past_value_names", "past_key_values.%d.value"))]
    present = [outputs.get(k, d) % i for i in range(layers) for k, d in
               (("present_key_names", "present.%d.key"),
                ("present_value_names", "present.%d.value"))]
    return {"input_ids": inputs.get("input_ids", "input_ids"),
            "attention_mask": inputs.get("attention_mask", "attention_mask"),
            "logits": outputs.get("logits", "logits"), "past": past, "present": present}


def read_genai_config(folder: Path) -> dict[str, Any]:
    """The ``genai_config.json`` of a generation folder."""
    try:
        return json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        raise RuntimeUnavailableError(f"cannot read '{folder}/genai_config.json': "
                                      f"{type(exc).__name__}") from None
