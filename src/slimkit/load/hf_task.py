"""A Hugging Face folder loaded with its head: the class its config's ``architectures`` names
(``BertForSequenceClassification``, ``LlamaForCausalLM``, ``ViTForImageClassification``...;
the bare model when none is named), called with named tensors and returning its outputs under
their own names (``logits``, ``last_hidden_state``...). Remote code is never run: a config with
``auto_map`` is refused. Pooled sentence embeddings are only made on request (or where the
folder declares them, as sentence-transformers folders do)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from slimkit.errors import ModelLoadError

# outputs that are not the model's result: caches, per-layer states, losses
NOT_OUTPUTS = ("loss", "past_key_values", "hidden_states", "attentions", "cross_attentions",
               "encoder_hidden_states", "encoder_attentions", "decoder_hidden_states",
               "decoder_attentions", "reshaped_hidden_states", "encoder_last_hidden_state",
               "mems", "aux_loss")
POOLINGS = ("mean", "cls")


def read_config_json(folder: Path) -> dict[str, Any]:
    """config.json as a dict (before transformers sees it: remote code is checked first)."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ModelLoadError(f"'{folder / 'config.json'}' is not valid JSON "
                             f"({type(exc).__name__}); re-save the model") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"'{folder / 'config.json'}' does not hold a JSON object")
    return data


def refuse_remote_code(folder: Path, config: dict[str, Any]) -> None:
    """A config with ``auto_map`` names Python code shipped in the folder: never run it."""
    if config.get("auto_map"):
        raise ModelLoadError(
            f"'{folder}' needs custom code (config.json has 'auto_map': "
            f"{sorted(config['auto_map'])}); slimkit never runs code from a model folder "
            "(trust_remote_code): use an architecture transformers ships, or load the model "
            "yourself and pass it as package.module:factory")


def model_class(transformers: Any, folder: Path, config: dict[str, Any]) -> Any:
    """The class ``architectures`` names, or AutoModel when the config names none."""
    names = config.get("architectures") or []
    if not names:
        return transformers.AutoModel
    name = str(names[0])
    try:
        cls = getattr(transformers, name, None)
    except Exception:  # noqa: BLE001 - a lazy import of a broken optional module
        cls = None
    if not isinstance(cls, type) or not issubclass(cls, transformers.PreTrainedModel):
        raise ModelLoadError(
            f"'{folder}' names architecture '{name}', which transformers "
            f"{transformers.__version__} does not have; fix 'architectures' in config.json "
            "or install a transformers version that has it")
    return cls


def declared_pooling(folder: Path) -> str | None:
    """The pooling a sentence-transformers folder declares (modules.json -> Pooling)."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    for module in modules if isinstance(modules, list) else []:
        if isinstance(module, dict) and str(module.get("type", "")).endswith("Pooling"):
            try:
                pooling = json.loads((folder / str(module.get("path", "")) / "config.json")
                                     .read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                return None
            if pooling.get("pooling_mode_mean_tokens"):
                return "mean"
            if pooling.get("pooling_mode_cls_token"):
                return "cls"
    return None


def call_kwargs(accepted: frozenset[str]) -> dict[str, Any]:
    """Keyword arguments of every call: a dict result, no key/value cache."""
    kwargs: dict[str, Any] = {"return_dict": True}
    if "use_cache" in accepted:
        kwargs["use_cache"] = False
    return kwargs


def output_names(result: Any) -> tuple[str, ...]:
    """The outputs of one call worth keeping: a head's logits when it has them, else every
    tensor output (``last_hidden_state``, ``pooler_output``...)."""
    items = result.items() if hasattr(result, "items") else []
    tensors = [k for k, v in items if isinstance(v, torch.Tensor) and k not in NOT_OUTPUTS]
    heads = [k for k in tensors if k.endswith("logits") or k.startswith("pred_")]
    return tuple(heads or tensors)


def unwrap(result: Any, names: tuple[str, ...]) -> Any:
    values = tuple(result[name] for name in names)
    return values[0] if len(values) == 1 else values


def write_pooling(folder: Path, pooling: str, hidden: int | None) -> None:
    """Declare ``pooling`` in ``folder`` as sentence-transformers folders do (modules.json and
    1_Pooling/config.json), so the folder loads back as the same embedding model."""
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    (folder / "1_Pooling").mkdir(exist_ok=True)
    config = {"word_embedding_dimension": hidden, "pooling_mode_cls_token": pooling == "cls",
              "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
              "pooling_mode_mean_sqrt_len_tokens": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=1) + "\n",
                                                       encoding="utf-8")
    (folder / "modules.json").write_text(json.dumps(modules, indent=1) + "\n",
                                         encoding="utf-8")
