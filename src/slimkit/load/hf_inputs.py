"""The input signature of a Hugging Face model, from its config and preprocessor config: token
ids and masks for text, ``pixel_values`` at the configured image size and channels for vision,
``input_values`` (raw audio) or ``input_features`` (spectrograms) for audio, and decoder ids
for encoder-decoder models. One small rule per input name (``INPUTS``); the model's
``main_input_name`` and its ``forward`` decide which rules apply.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimkit.model import DYNAMIC_BATCH, TensorSpec
from slimkit.registry import Registry

MAX_SAMPLES = 10_000_000  # audio: no real upper bound
DEFAULT_IMAGE = 224


@dataclass(frozen=True)
class Context:
    """What an input rule may read."""

    config: Any
    preprocessor: dict[str, Any]
    tokenizer: Any
    main: str
    accepted: frozenset[str]


Rule = Callable[[Context], "TensorSpec | None"]
INPUTS: Registry[Rule] = Registry("Hugging Face input")
OPTIONAL = ("attention_mask", "token_type_ids", "decoder_input_ids")


def read_preprocessor(folder: Path) -> dict[str, Any]:
    """``preprocessor_config.json`` of ``folder`` (an empty dict when there is none)."""
    path = folder / "preprocessor_config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        data = {}
    return data if isinstance(data, dict) else {}


def forward_names(model: Any) -> frozenset[str]:
    """The parameter names of ``model.forward``."""
    try:
        return frozenset(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def hf_signature(model: Any, config: Any, preprocessor: dict[str, Any],
                 tokenizer: Any) -> tuple[TensorSpec, ...]:
    """The inputs ``model`` is called with: its main input, then the optional ones it takes
    (masks, token types, decoder ids) when its config and tokenizer use them."""
    main = str(getattr(model, "main_input_name", "input_ids") or "input_ids")
    context = Context(config, preprocessor, tokenizer, main, forward_names(model))
    names = [main, *(n for n in OPTIONAL if n != main and n in context.accepted)]
    specs = []
    for name in names:
        rule = INPUTS.get(name) if name in INPUTS else None
        spec = rule(context) if rule is not None else None
        if spec is not None:
            specs.append(spec)
    if not specs:  # an unknown main input: one float tensor, to be described with --input
        specs.append(TensorSpec(main, (DYNAMIC_BATCH, "sequence")))
    return tuple(specs)


def sequence_range(config: Any) -> tuple[int, int] | None:
    """The range of sequence lengths: at most the learned positions (less a padding offset)."""
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 2:
            return (1, value - 2)
    return None


@INPUTS.register("input_ids")
def _input_ids(ctx: Context) -> TensorSpec:
    vocab = getattr(ctx.config, "vocab_size", None)
    return TensorSpec("input_ids", (DYNAMIC_BATCH, "sequence"), "int64",
                      int(vocab) if isinstance(vocab, int) and vocab > 0 else 2,
                      sequence_range(ctx.config))


@INPUTS.register("attention_mask")
def _attention_mask(ctx: Context) -> TensorSpec | None:
    if ctx.main != "input_ids":
        return None  # an audio or vision model's mask is optional and left out
    return TensorSpec("attention_mask", (DYNAMIC_BATCH, "sequence"), "int64",
                      dynamic_range=sequence_range(ctx.config))


@INPUTS.register("token_type_ids")
def _token_types(ctx: Context) -> TensorSpec | None:
    types = getattr(ctx.config, "type_vocab_size", 0)
    if ctx.main != "input_ids" or not isinstance(types, int) or types < 1:
        return None
    if ctx.tokenizer is not None and "token_type_ids" not in ctx.tokenizer.model_input_names:
        return None
    return TensorSpec("token_type_ids", (DYNAMIC_BATCH, "sequence"), "int64", types,
                      sequence_range(ctx.config))


@INPUTS.register("decoder_input_ids")
def _decoder_ids(ctx: Context) -> TensorSpec | None:
    if not getattr(ctx.config, "is_encoder_decoder", False):
        return None
    vocab = getattr(ctx.config, "vocab_size", 2)
    return TensorSpec("decoder_input_ids", (DYNAMIC_BATCH, "decoder_sequence"), "int64",
                      int(vocab), sequence_range(ctx.config))


@INPUTS.register("pixel_values")
def _pixels(ctx: Context) -> TensorSpec:
    channels = getattr(ctx.config, "num_channels", 3)
    height, width = image_size(ctx.config, ctx.preprocessor)
    return TensorSpec("pixel_values", (DYNAMIC_BATCH, int(channels), height, width))


def image_size(config: Any, preprocessor: dict[str, Any]) -> tuple[int, int]:
    """(height, width): the preprocessor's crop or resize size, else the config's image size,
    else 224."""
    for key in ("crop_size", "size"):
        if key == "crop_size" and not preprocessor.get("do_center_crop", True):
            continue
        found = _hw(preprocessor.get(key))
        if found is not None:
            return found
    return _hw(getattr(config, "image_size", None)) or (DEFAULT_IMAGE, DEFAULT_IMAGE)


def _hw(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int) and value > 0:
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int)
                                                                    for v in value):
        return int(value[0]), int(value[1])
    if isinstance(value, dict):
        if isinstance(value.get("height"), int) and isinstance(value.get("width"), int):
            return int(value["height"]), int(value["width"])
        edge = value.get("shortest_edge")
        if isinstance(edge, int) and edge > 0:
            return edge, edge
    return None


@INPUTS.register("input_values")
def _raw_audio(ctx: Context) -> TensorSpec:
    """Raw audio: any length above what the convolutional feature encoder needs for a few
    frames (its receptive field plus 15 strides)."""
    kernels = list(getattr(ctx.config, "conv_kernel", ()) or ())
    strides = list(getattr(ctx.config, "conv_stride", ()) or ())
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides, strict=False):
        field += (int(kernel) - 1) * jump
        jump *= int(stride)
    least = field + 15 * jump if kernels else int(ctx.preprocessor.get("sampling_rate", 16000))
    return TensorSpec("input_values", (DYNAMIC_BATCH, "samples"), "float32",
                      dynamic_range=(least, MAX_SAMPLES))


@INPUTS.register("input_features")
def _spectrogram(ctx: Context) -> TensorSpec:
    """Whisper-style (mel bins, frames = twice the encoder positions, fixed) or
    (frames, features) as the feature extractor describes it."""
    mels, positions = (getattr(ctx.config, a, None) for a in ("num_mel_bins",
                                                              "max_source_positions"))
    if isinstance(mels, int) and isinstance(positions, int):
        return TensorSpec("input_features", (DYNAMIC_BATCH, mels, 2 * positions))
    size = ctx.preprocessor.get("feature_size") or getattr(ctx.config, "input_feat_per_channel",
                                                           None) or 80
    channels = getattr(ctx.config, "input_channels", None) or 1
    return TensorSpec("input_features", (DYNAMIC_BATCH, "frames", int(size) * int(channels)),
                      dynamic_range=(16, 1 << 20))

