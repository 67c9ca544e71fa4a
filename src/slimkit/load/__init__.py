"""Models in: one entry point, :func:`load_model`, for every kind of model spec."""

from __future__ import annotations

from pathlib import Path

from slimkit.errors import ModelLoadError
from slimkit.model import Model

SPEC_HELP = (
    "a model is an .onnx file, a Hugging Face folder (config.json + safetensors), a .gguf "
    "file, a generation folder ('slimkit export' of a causal LM), a folder "
    "written by 'slimkit prune', a .slim file ('slimkit compact'), package.module:factory "
    "(or file.py:factory) with optional weights, or builtin:NAME"
)


def load_model(
    spec: str | Model,
    *,
    weights: str | None = None,
    input_shape: str | tuple[int, ...] | None = None,
    seed: int = 0,
) -> Model:
    """Load the model named by ``spec``; the files it names are only read, never written.

    Args:
        spec: an ``.onnx`` file, a Hugging Face folder, ``package.module:factory``,
            ``file.py:factory`` or ``builtin:NAME`` (digits-mlp, digits-cnn, resnet18,
            resnet18-cifar, mobilenetv2, minilm, smollm2), a ``.gguf`` file or a generation
            folder (causal LMs). A ``Model`` is returned as it is.
        weights: ``.safetensors`` or ``.pt``/``.pth`` weights for a factory spec.
        input_shape: the full input shape (``"1x3x32x32"``) of a factory model when it
            cannot be inferred (the batch axis becomes dynamic); for other models it
            replaces the declared shape of their single input (e.g. another image size).
        seed: seeds random init and the training of built-in digits models.

    Example:
        >>> m = load_model("builtin:resnet18-cifar")
        >>> m.framework, m.inputs[0].shape
        ('torch', ('batch', 3, 32, 32))
    """
    if isinstance(spec, Model):
        return spec
    model = _load(spec, weights, input_shape, seed)
    if input_shape is not None and not _is_factory(spec):
        from slimkit.load.factory import parse_shape

        shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
        model = model.with_input_shape(shape)
    return model


def _load(spec: str, weights: str | None, input_shape: str | tuple[int, ...] | None,
          seed: int) -> Model:
    if weights and not _is_factory(spec):
        raise ModelLoadError("weights are only taken with a package.module:factory spec")
    if spec.startswith("builtin:"):
        from slimkit.load.zoo import load_builtin

        return load_builtin(spec.split(":", 1)[1], seed=seed)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf") or _is_generation_folder(path):
        from slimkit.llm.load import load_causal_lm, load_generation_folder

        return load_causal_lm(path) if spec.endswith(".gguf") else load_generation_folder(path)
    if spec.endswith(".onnx"):
        from slimkit.load.onnx_file import load_onnx

        return load_onnx(path)
    if spec.endswith(".slim"):
        from slimkit.compact.container import load_slim

        return load_slim(path)
    from slimkit.prune.save import PLAN_FILE, is_pruned_folder, load_pruned

    if is_pruned_folder(path) or path.name == PLAN_FILE:
        return load_pruned(path)
    from slimkit.lowrank.save import PLAN_FILE as LOWRANK_PLAN
    from slimkit.lowrank.save import is_lowrank_folder, load_lowrank

    if is_lowrank_folder(path) or path.name == LOWRANK_PLAN:
        return load_lowrank(path)
    from slimkit.load.hf import is_hf_folder, load_hf_folder

    if is_hf_folder(path):
        return load_hf_folder(path)
    if _is_factory(spec):
        from slimkit.load.factory import load_factory, parse_shape

        shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
        return load_factory(spec, weights, shape)
    if path.is_dir():
        raise ModelLoadError(f"folder '{path}' has no config.json; {SPEC_HELP}")
    if path.exists():
        raise ModelLoadError(f"'{path}' is not a model slimkit can load; {SPEC_HELP}")
    raise ModelLoadError(f"model '{spec}' does not exist; {SPEC_HELP}")


def _is_generation_folder(path: Path) -> bool:
    """A causal LM exported for generation (checked here without importing slimkit.llm)."""
    return path.is_dir() and (path / "genai_config.json").is_file()


def _is_factory(spec: str) -> bool:
    from slimkit.load.factory import is_factory_spec

    return not spec.startswith("builtin:") and is_factory_spec(spec)


__all__ = ["load_model", "SPEC_HELP"]
