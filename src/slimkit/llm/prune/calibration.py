"""Calibration text as token windows, and running a decoder one layer at a time on it.

Layer-wise methods (Wanda, SparseGPT, depth by block influence) need what every decoder layer
sees: the hidden states entering layer 0 are caught once (a pre-hook stops the forward pass
there, with the keyword arguments the model gives its layers: rotary embeddings, mask), then
each layer runs on the stored states and its outputs become the next layer's inputs. Memory is
one copy of the hidden states, not the model's activations.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.errors import DataError, InputError
from slimkit.llm.text import Text, load_text

log = logging.getLogger(__name__)
BATCH = 4  # windows per forward call of one layer


@dataclass(frozen=True)
class Calibration:
    """Token windows ``(windows, window)`` cut from a text, and where they came from."""

    ids: torch.Tensor
    text: Text
    tokens_in_text: int

    def describe(self) -> dict[str, Any]:
        return {**self.text.describe(), "windows": int(self.ids.shape[0]),
                "window": int(self.ids.shape[1]), "tokens": int(self.ids.numel()),
                "tokens_in_text": self.tokens_in_text}


def calibration_windows(tokenizer: Any, text: str | Text, windows: int | None,
                        window: int) -> Calibration:
    """``windows`` disjoint windows of ``window`` tokens spread evenly over ``text`` (None: all
    the text holds; fewer, logged, when the text is short; an error when it is shorter than
    one window). A built-in
    text must be its calibration part: evaluating on what was calibrated on would flatter.

    Example:
        >>> from slimkit.testing.llm import tiny_tokenizer
        >>> c = calibration_windows(tiny_tokenizer(), "builtin:python-reference:calibration",
        ...                         4, 64)
        >>> tuple(c.ids.shape)
        (4, 64)
    """
    source = text if isinstance(text, Text) else load_text(text)
    if source.source.startswith("builtin:") and source.split != "calibration":
        raise InputError(f"calibrate on the calibration part ({source.source}:calibration), "
                         f"not the {source.split} part: that part is kept for evaluation")
    if tokenizer is None:
        raise InputError("calibration needs the model's tokenizer; this model has none")
    ids = np.asarray(tokenizer(source.text)["input_ids"], np.int64)
    available = len(ids) // window
    if available < 1:
        raise DataError(f"calibration text '{source.source}' has {len(ids)} tokens, fewer "
                        f"than one window of {window}; give a longer text or a smaller window")
    windows = available if windows is None else windows
    if available < windows:
        log.warning("calibration text '%s' holds %d windows of %d tokens; %d asked",
                    source.source, available, window, windows)
    count = min(windows, available)
    starts = np.linspace(0, available - 1, count).round().astype(int) * window
    rows = np.stack([ids[s:s + window] for s in starts])
    return Calibration(torch.from_numpy(rows), source, len(ids))


def decoder_layers(hf: Any) -> nn.ModuleList:
    """The decoder layers of a transformers ``*ForCausalLM`` (``model.layers``)."""
    layers = getattr(getattr(hf, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise InputError(f"{type(hf).__name__} has no decoder layers at model.layers; "
                         "layer-wise pruning supports Llama-style decoders (Llama, Qwen2, "
                         "Mistral, Phi3)")
    return layers


class _Caught(Exception):
    """Raised by the pre-hook of layer 0 to stop the forward pass once its inputs are kept."""


@dataclass
class LayerStream:
    """The hidden states entering the current layer (one tensor per batch of windows) and
    the keyword arguments the model calls its layers with on that batch."""

    hidden: list[torch.Tensor]
    kwargs: list[dict[str, Any]] = field(default_factory=list)

    def run(self, layer: nn.Module) -> list[torch.Tensor]:
        """``layer``'s outputs on every batch (not stored: the caller decides)."""
        with torch.no_grad():
            return [_first(layer(h, **kw)) for h, kw in zip(self.hidden, self.kwargs,
                                                            strict=True)]

    def advance(self, layer: nn.Module) -> list[torch.Tensor]:
        """Run ``layer`` and make its outputs the inputs of the next; the old inputs back."""
        before, self.hidden = self.hidden, self.run(layer)
        return before


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # older transformers return tuples


def layer_stream(hf: Any, ids: torch.Tensor, batch: int = BATCH) -> LayerStream:
    """The inputs of decoder layer 0 for every window of ``ids``."""
    layer0 = decoder_layers(hf)[0]
    stream = LayerStream([])

    def catch(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        stream.hidden.append((args[0] if args else kwargs.pop("hidden_states")).detach())
        stream.kwargs.append({**{k: v for k, v in kwargs.items() if k != "hidden_states"},
                              "use_cache": False})
        raise _Caught

    handle = layer0.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            for chunk in ids.split(batch):
                with contextlib.suppress(_Caught):
                    hf(input_ids=chunk, use_cache=False)
    finally:
        handle.remove()
    return stream
