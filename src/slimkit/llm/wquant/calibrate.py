"""Calibration text through a decoder one layer at a time: the windows' hidden states enter
layer 0, each layer's linear inputs are summarised (Hessian ``X^T X``, mean ``|x|`` per input
channel, a sample of rows), then the layer, once quantized, produces the next layer's inputs,
so each layer is calibrated on activations that carry the earlier layers' quantization error.

Statistics are taken per *input group*: linears fed the very same tensor (q, k and v; gate and
up) share one Hessian, which is also what the exported graph's fused MatMuls need.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from slimkit.errors import DataError, InputError

log = logging.getLogger(__name__)


@dataclass
class GroupStats:
    """What one input group saw: ``names`` (qualified, in module order) share the input."""

    names: list[str]
    hessian: torch.Tensor
    abs_sum: torch.Tensor
    tokens: int = 0
    samples: list[torch.Tensor] = field(default_factory=list)

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.tokens, 1)

    def sample(self) -> torch.Tensor:
        return torch.cat(self.samples) if self.samples else torch.zeros(0, self.hessian.shape[0])


def calibration_windows(tokenizer: Any, text: str, window: int, count: int) -> torch.Tensor:
    """``count`` disjoint windows of ``window`` tokens from the start of ``text`` (fewer when
    the text is short), as ``(windows, window)`` int64; a text shorter than one window is
    refused."""
    from slimkit.llm.evaluate import token_ids

    ids = token_ids(tokenizer, text, window * count)
    usable = len(ids) // window
    if usable < 1:
        raise DataError(f"the calibration text has {len(ids)} tokens, fewer than one window of "
                        f"{window}; give a longer text or a smaller calibration_window")
    if usable < count:
        log.warning("calibration text gives %d windows of %d tokens (%d asked)", usable, window,
                    count)
    return torch.from_numpy(ids[:usable * window].reshape(usable, window).copy())


def check_calibration_text(spec: str) -> None:
    """Refuse calibrating on the text the model is evaluated on (the built-in evaluation part)."""
    if spec.startswith("builtin:") and not spec.endswith(":calibration"):
        raise InputError(f"calibration text '{spec}' is (or defaults to) the evaluation part the "
                         "model is judged on; use builtin:python-reference:calibration or your "
                         "own .txt file")


class _Stop(Exception):
    pass


def decoder_layers(hf: Any) -> Any:
    """The ``ModuleList`` of decoder layers of a transformers ``*ForCausalLM``."""
    layers = getattr(getattr(hf, "model", None), "layers", None)
    if layers is None:
        raise InputError(f"{type(hf).__name__} has no model.layers; weight-only quantization "
                         "knows decoder-only transformers (Llama, Mistral, Qwen2/3, Phi3)")
    return layers


@torch.no_grad()
def first_layer_inputs(hf: Any, windows: torch.Tensor) -> tuple[list[torch.Tensor], dict]:
    """Hidden states entering layer 0 for each window, and the keyword arguments the model
    passes every layer (rotary embeddings, mask; the same for windows of equal length)."""
    captured: list[torch.Tensor] = []
    kwargs: dict[str, Any] = {}

    def hook(module: Any, args: tuple, kw: dict) -> None:
        captured.append(args[0] if args else kw["hidden_states"])
        if not kwargs:
            kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"})
        raise _Stop

    handle = decoder_layers(hf)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for row in windows:
            with contextlib.suppress(_Stop):
                hf(input_ids=row[None], use_cache=False)
    finally:
        handle.remove()
    kwargs["use_cache"] = False
    for key in ("past_key_values", "past_key_value", "cache"):
        kwargs.pop(key, None)
    return captured, kwargs


def run_layer(layer: Any, hidden: list[torch.Tensor], kwargs: dict) -> list[torch.Tensor]:
    """The layer's outputs for each window's hidden states."""
    with torch.no_grad():
        outs = [layer(h, **kwargs) for h in hidden]
    return [o[0] if isinstance(o, tuple) else o for o in outs]


def linears(layer: Any) -> dict[str, torch.nn.Linear]:
    """The layer's ``nn.Linear`` modules by name relative to the layer, in module order."""
    return {name: m for name, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}


@torch.no_grad()
def input_groups(layer: Any, hidden: torch.Tensor, kwargs: dict) -> list[list[str]]:
    """Linears of ``layer`` grouped by the tensor they are fed (one forward on ``hidden``)."""
    seen: dict[str, torch.Tensor] = {}  # the tensors themselves: ids of freed ones repeat
    handles = [m.register_forward_pre_hook(_remember(seen, name))
               for name, m in linears(layer).items()]
    try:
        layer(hidden, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    groups: list[list[str]] = []
    for name in (n for n in linears(layer) if n in seen):
        group = next((g for g in groups if seen[g[0]] is seen[name]), None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    return groups


def _remember(seen: dict[str, torch.Tensor], name: str) -> Any:
    def hook(module: Any, args: tuple) -> None:
        seen[name] = args[0]
    return hook


@torch.no_grad()
def group_stats(layer: Any, groups: list[list[str]], hidden: list[torch.Tensor], kwargs: dict,
                sample_rows: int, seed: int) -> dict[str, GroupStats]:
    """Statistics of each group's input over every window (keyed by the group's first name)."""
    modules = linears(layer)
    stats: dict[str, GroupStats] = {}
    per_window = max(1, sample_rows // max(len(hidden), 1))
    generator = torch.Generator().manual_seed(seed)
    handles = []
    for names in groups:
        k = modules[names[0]].in_features
        entry = GroupStats(names, torch.zeros(k, k, dtype=torch.float64),
                           torch.zeros(k, dtype=torch.float64))
        stats[names[0]] = entry
        handles.append(modules[names[0]].register_forward_pre_hook(
            _accumulate(entry, per_window, generator)))
    try:
        for h in hidden:
            layer(h, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _accumulate(entry: GroupStats, rows: int, generator: torch.Generator) -> Any:
    def hook(module: Any, args: tuple) -> None:
        x = args[0].reshape(-1, args[0].shape[-1]).float()
        entry.hessian += (x.T @ x).double()
        entry.abs_sum += x.abs().sum(0).double()
        entry.tokens += x.shape[0]
        pick = torch.randperm(x.shape[0], generator=generator)[:rows]
        entry.samples.append(x[pick].clone())
    return hook


def layer_walk(hf: Any, windows: torch.Tensor) -> Iterator[tuple[int, Any, list, dict]]:
    """``(index, layer, hidden states entering it, layer kwargs)`` for each decoder layer; the
    caller may change the layer's weights before asking for the next (the next layer's inputs
    are computed from the layer as it is then)."""
    hidden, kwargs = first_layer_inputs(hf, windows)
    for index, layer in enumerate(decoder_layers(hf)):
        yield index, layer, hidden, kwargs
        hidden = run_layer(layer, hidden, kwargs)


@torch.no_grad()
def final_norm_stats(hf: Any, windows: torch.Tensor, sample_rows: int,
                     seed: int) -> GroupStats:
    """Statistics of the LM head's input (the final norm's output) over the windows, with the
    model as it is (its layers quantized already)."""
    head = hf.get_output_embeddings()
    k = head.in_features
    entry = GroupStats(["lm_head"], torch.zeros(k, k, dtype=torch.float64),
                       torch.zeros(k, dtype=torch.float64))
    generator = torch.Generator().manual_seed(seed)
    handle = head.register_forward_pre_hook(
        _accumulate(entry, max(1, sample_rows // len(windows)), generator))
    try:
        for row in windows:
            hidden = hf.model(input_ids=row[None], use_cache=False).last_hidden_state
            head(hidden)
    finally:
        handle.remove()
    return entry
