"""A causal LM as the server needs it, from any spec the loader reads (a Hugging Face
``*ForCausalLM`` folder, a ``.gguf`` file, ``builtin:smollm2``, an exported generation folder):
loading, remote-code refusal and file checks are ``slimkit.llm``'s, through ``load_model``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimkit.model import Model, Task


@dataclass(frozen=True)
class CausalLM:
    """A causal LM with its tokenizer and end-of-sequence token ids: ``module`` is the
    transformers model (PyTorch), or None for an exported generation folder (``model`` then
    runs in ONNX Runtime)."""

    name: str
    module: Any
    tokenizer: Any
    eos_token_ids: tuple[int, ...]
    model: Model | None = None


def is_causal_lm(spec: str) -> bool:
    """Whether ``spec`` names a causal LM (then ``slimkit serve`` speaks OpenAI's API), decided
    without loading it.

    Example:
        >>> is_causal_lm("builtin:smollm2"), is_causal_lm("builtin:minilm")
        (True, False)
    """
    from slimkit.llm.load import is_causal_lm_config, is_generation_folder

    path = Path(spec).expanduser()
    return (spec == "builtin:smollm2" or spec.endswith(".gguf") or is_generation_folder(path)
            or (path.is_dir() and is_causal_lm_config(path)))


def serving_lm(model: Model) -> CausalLM:
    """The serving view of a loaded causal LM."""
    from slimkit.errors import InputError
    from slimkit.llm.load import hf_module

    if model.task != Task.CAUSAL_LM:
        raise InputError(f"'{model.source}' is not a causal language model")
    module = hf_module(model) if model.module is not None else None
    eos = eos_token_ids(module, model.tokenizer, model.meta.get("genai_config"))
    return CausalLM(model.name, module, model.tokenizer, eos, model)


def load_causal_lm(spec: str) -> CausalLM:
    """Load the causal LM ``spec`` names (see :func:`is_causal_lm`)."""
    from slimkit.load import load_model

    return serving_lm(load_model(spec))


def eos_token_ids(model: Any, tokenizer: Any,
                  genai_config: dict[str, Any] | None = None) -> tuple[int, ...]:
    """The tokens that end a generation: the generation config's, the tokenizer's and, for a
    generation folder, its ``genai_config.json``'s."""
    ids: list[Any] = []
    search = (genai_config or {}).get("model", {})
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                   getattr(tokenizer, "eos_token_id", None), search.get("eos_token_id")):
        ids.extend(source if isinstance(source, list | tuple) else [source])
    return tuple(sorted({int(i) for i in ids if i is not None}))
