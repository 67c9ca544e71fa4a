"""Data specs -> Dataset: ``builtin:digits[:split]``, ``.npz`` files, text files (one sentence a
line, tokenised with the model's tokenizer) and ``synthetic[:N]`` inputs from the model's spec.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from slimkit.data.dataset import Dataset
from slimkit.data.digits import SPLITS, digits_splits
from slimkit.errors import DataError
from slimkit.io import require_file
from slimkit.model import Model, TensorSpec

TEXT_SUFFIXES = (".txt", ".text")
MAX_TOKENS = 128


def load_data(spec: str, model: Model, *, split: str = "test", seed: int = 0) -> Dataset:
    """Load the data named by ``spec`` shaped for ``model``'s inputs.

    Args:
        spec: ``builtin:digits`` (optionally ``builtin:digits:train``), a ``.npz`` file, a text
            file, or ``synthetic`` / ``synthetic:N``.
        model: the model the data is for; its input spec decides names, shapes and dtypes.
        split: the split of a built-in data set when ``spec`` names none.
        seed: seeds synthetic data.

    Example:
        >>> from slimkit import load_model
        >>> m = load_model("builtin:resnet18-cifar")
        >>> load_data("synthetic:4", m).inputs["input"].shape
        (4, 3, 32, 32)
    """
    if spec.startswith("builtin:"):
        return _builtin(spec, model, split)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        count = _parse_count(spec)
        return synthetic(model.inputs, count, seed=seed)
    path = require_file(spec, "data file")
    if path.suffix == ".npz":
        return _npz(path, model)
    if path.suffix in TEXT_SUFFIXES:
        return _text(path, model)
    raise DataError(
        f"unknown data spec '{spec}': use builtin:digits, a .npz file, a .txt file "
        "(one sentence a line) or synthetic[:N]"
    )


def _parse_count(spec: str) -> int:
    _, _, count = spec.partition(":")
    if not count:
        return 64
    if not count.isdigit() or int(count) < 1:
        raise DataError(f"'{spec}': the count after 'synthetic:' must be a positive integer")
    return int(count)


def synthetic(inputs: tuple[TensorSpec, ...], count: int, *, seed: int = 0,
              dynamic: int = MAX_TOKENS) -> Dataset:
    """Random inputs following ``inputs`` (for speed-only work): normal floats, or integer ids
    below each spec's ``high``; inputs named like masks are all ones."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = spec.concrete_shape(count, dynamic)
        if "mask" in spec.name:
            arrays[spec.name] = np.ones(shape, dtype=spec.dtype)
        elif spec.dtype.startswith("int"):
            high = spec.high or 2
            if spec.name == "token_type_ids":
                high = 1
            arrays[spec.name] = rng.integers(0, high, size=shape).astype(spec.dtype)
        else:
            arrays[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return Dataset(arrays, None, f"synthetic:{count}")


def _builtin(spec: str, model: Model, split: str) -> Dataset:
    parts = spec.split(":")
    if parts[1] != "digits" or len(parts) > 3:
        raise DataError(f"unknown built-in data '{spec}'; available: builtin:digits[:split]")
    split = parts[2] if len(parts) == 3 else split
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' of builtin:digits; use one of {SPLITS}")
    images, labels = digits_splits()[split]
    images, note = _digits_for_image_model(images, model)
    return Dataset(_fit_single_input(images, model, spec), labels, f"digits:{split}{note}")


def _digits_for_image_model(images: np.ndarray, model: Model) -> tuple[np.ndarray, str]:
    """Digits (N, 1, 8, 8) as they are, or, for a model taking larger images (C, H, W), upsampled
    bilinearly to H x W and repeated over C channels (how resnet18-cifar is trained on digits)."""
    if len(model.inputs) != 1:
        return images, ""
    dims = model.inputs[0].shape[1:]
    if len(dims) != 3 or not all(isinstance(d, int) and d > 0 for d in dims):
        return images, ""
    shape = tuple(int(d) for d in dims)
    if shape == images.shape[1:] or shape[1] < 8 or shape[2] < 8:
        return images, ""
    import torch

    x = torch.nn.functional.interpolate(torch.from_numpy(images), size=(shape[1], shape[2]),
                                        mode="bilinear", align_corners=False)
    x = x.repeat(1, int(shape[0]), 1, 1)
    return x.numpy().astype(np.float32), f"@{shape[0]}x{shape[1]}x{shape[2]}"


def _fit_single_input(array: np.ndarray, model: Model, source: str) -> dict[str, np.ndarray]:
    """Reshape one array to the model's only input when the element counts agree."""
    if len(model.inputs) != 1:
        raise DataError(f"'{source}' gives one input array; model '{model.name}' takes "
                        f"{len(model.inputs)}: {list(model.input_names)}")
    spec = model.inputs[0]
    return {spec.name: _reshape_for(array, spec, source)}


def _reshape_for(array: np.ndarray, spec: TensorSpec, source: str) -> np.ndarray:
    want = spec.concrete_shape(len(array))
    fixed = [d for d in spec.shape[1:] if isinstance(d, int) and d > 0]
    dynamic = len(fixed) != len(spec.shape) - 1
    if not dynamic and int(np.prod(want[1:])) != int(np.prod(array.shape[1:])):
        raise DataError(
            f"'{source}': examples of shape {tuple(array.shape[1:])} do not fit input "
            f"'{spec.name}' of shape {tuple(spec.shape)}"
        )
    array = array if dynamic else array.reshape(want)
    return array.astype(spec.dtype, copy=False)


def _npz(path: Path, model: Model) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read '{path}' as a .npz file: {exc}") from None
    labels = arrays.pop("labels", None)
    missing = [name for name in model.input_names if name not in arrays]
    if missing and len(model.inputs) == 1 and len(arrays) == 1:
        arrays = {model.input_names[0]: next(iter(arrays.values()))}
    elif missing:
        raise DataError(f"'{path}' has arrays {sorted(arrays)}; model '{model.name}' needs "
                        f"{list(model.input_names)} (name the arrays after the model's inputs)")
    fitted = {s.name: _reshape_for(arrays[s.name], s, str(path)) for s in model.inputs}
    return Dataset(fitted, labels, path.name)


def _text(path: Path, model: Model) -> Dataset:
    if model.tokenizer is None:
        raise DataError(f"'{path}' is text, but model '{model.name}' has no tokenizer; "
                        "text data needs a Hugging Face model (or builtin:minilm)")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(f"'{path}' has no sentences (one sentence a line expected)")
    encoded = model.tokenizer(lines, padding="longest", truncation=True,
                              max_length=MAX_TOKENS, return_tensors="np")
    arrays = {s.name: np.asarray(encoded[s.name]).astype(s.dtype) for s in model.inputs
              if s.name in encoded}
    if len(arrays) != len(model.inputs):
        raise DataError(f"the tokenizer of '{model.name}' gives {sorted(encoded)}; the model "
                        f"needs {list(model.input_names)}")
    return Dataset(arrays, None, path.name)
