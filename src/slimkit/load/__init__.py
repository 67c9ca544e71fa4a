"""Models in: one entry point, :func:`load_model`, for every kind of model spec."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from slimkit.errors import ModelLoadError
from slimkit.load.formats import LoadOptions, ModelFormat, register_format
from slimkit.model import Model, TensorSpec

InputsArg = str | Path | Sequence[str | TensorSpec] | None  # see load_model's ``inputs``

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
    inputs: InputsArg = None,
    pooling: str | None = None,
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
        inputs: the input signature, for models with several inputs or non-float ones:
            ``NAME:SHAPE:DTYPE`` strings (``"ids:1x16:int64"``) or TensorSpecs, or a sample
            ``.npz`` file (one array per input). A factory model takes them as they are;
            other models check them against the inputs they declare.
        pooling: ``mean`` or ``cls``: a Hugging Face encoder without a head returns one
            embedding per example instead of its hidden states.
        seed: seeds random init and the training of built-in digits models.

    Example:
        >>> m = load_model("builtin:resnet18-cifar")
        >>> m.framework, m.inputs[0].shape
        ('torch', ('batch', 3, 32, 32))
        >>> load_model("slimkit.testing:tiny_mlp", inputs=["x:1x8:float32"]).input_names
        ('x',)
    """
    if isinstance(spec, Model):
        return spec
    given, source = _signature(inputs)
    model = _load(spec, weights, input_shape, seed, LoadOptions(inputs=given, pooling=pooling))
    if pooling is not None and model.meta.get("pooling") != pooling:
        raise ModelLoadError(f"pooling applies to Hugging Face encoders; '{spec}' is not one")
    factory = _is_factory(spec)
    if input_shape is not None and not factory and given is None:
        from slimkit.load.factory import parse_shape

        shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
        model = model.with_input_shape(shape)
    if given is not None and not factory:
        from slimkit.load.signature import fit_signature

        model = fit_signature(model, given, source)
    if given is not None and model.module is not None:
        from slimkit.load.probe import probe

        probe(model, source)
    return model


def _signature(inputs: Any) -> tuple[tuple[TensorSpec, ...] | None, str]:
    """The TensorSpecs of ``inputs`` (strings, specs, or a sample file) and where they came
    from, for messages."""
    from slimkit.load.signature import parse_inputs, read_sample

    if inputs is None:
        return None, ""
    if isinstance(inputs, (str, Path)):
        specs, _ = read_sample(inputs)
        return specs, f"sample file '{inputs}'"
    items = list(inputs)
    if not items:
        return None, ""
    texts = [i for i in items if isinstance(i, str)]
    specs = parse_inputs(texts) if texts else ()
    specs += tuple(i for i in items if isinstance(i, TensorSpec))
    return specs, "--input"


def _load(spec: str, weights: str | None, input_shape: str | tuple[int, ...] | None,
          seed: int, extra: LoadOptions) -> Model:
    from slimkit.load.factory import parse_shape
    from slimkit.load.formats import find_format

    fmt = find_format(spec)
    if weights and (fmt is None or not fmt.takes_weights):
        raise ModelLoadError("weights are only taken with a package.module:factory spec")
    if fmt is not None:
        shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
        options = replace(extra, weights=weights, input_shape=shape, seed=seed)
        return fmt.read(spec, Path(spec).expanduser(), options)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise ModelLoadError(f"folder '{path}' has no config.json; {SPEC_HELP}")
    if path.exists():
        raise ModelLoadError(f"'{path}' is not a model slimkit can load; {SPEC_HELP}")
    raise ModelLoadError(f"model '{spec}' does not exist; {SPEC_HELP}")


def _is_factory(spec: str) -> bool:
    from slimkit.load.factory import is_factory_spec

    return not spec.startswith("builtin:") and is_factory_spec(spec)


def _read_onnx(spec: str, path: Path, options: LoadOptions) -> Model:
    from slimkit.load.onnx_file import load_onnx

    return load_onnx(path)


def _read_hf(spec: str, path: Path, options: LoadOptions) -> Model:
    from slimkit.load.hf import load_hf_folder

    return load_hf_folder(path, pooling=options.pooling)


def _is_hf(spec: str, path: Path) -> bool:
    from slimkit.load.hf import is_hf_folder

    return is_hf_folder(path)


def _read_factory(spec: str, path: Path, options: LoadOptions) -> Model:
    from slimkit.load.factory import load_factory

    return load_factory(spec, options.weights, options.input_shape, options.inputs)


register_format(ModelFormat("onnx", lambda spec, _: spec.endswith(".onnx"), _read_onnx, 20))
register_format(ModelFormat("huggingface", _is_hf, _read_hf, 60))
register_format(ModelFormat("factory", lambda spec, _: _is_factory(spec), _read_factory, 70,
                            takes_weights=True))

__all__ = ["SPEC_HELP", "LoadOptions", "ModelFormat", "load_model", "register_format"]
