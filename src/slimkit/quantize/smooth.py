"""SmoothQuant-style rebalancing (Xiao et al. 2023) for transformers, done in torch before export:
for every LayerNorm whose output feeds Linear layers, per input channel j,
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``; the LayerNorm's weight and bias are divided by
s and the Linear weights' columns multiplied by s. The float function is unchanged, but the
activation outlier channels shrink, so per-tensor int8 activations lose less.

Which Linear reads which LayerNorm is found by running the model once with hooks (a Linear whose
input is the very tensor a LayerNorm returned), so no architecture names are hard-coded.
ORT's own SmoothQuant option needs Intel Neural Compressor; this is the few lines it takes.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.model import Model


def smooth_quant(model: Model, data: Dataset, alpha: float = 0.5,
                 batches: int = 4) -> tuple[Model, dict[str, Any]]:
    """A copy of ``model`` with LayerNorm -> Linear pairs rebalanced; and what was done."""
    module = copy.deepcopy(model.require_module("SmoothQuant")).eval()
    pairs, act_max = _observe(module, model, data, batches)
    check = model.torch_args(data.first_batch(4))
    with torch.no_grad():
        reference = module(*check)
    smoothed, rejected = [], []
    for norm_name, linear_names in pairs.items():
        norm = module.get_submodule(norm_name)
        linears = [module.get_submodule(n) for n in linear_names]
        if getattr(norm, "weight", None) is None or not linears:
            continue
        saved = copy.deepcopy((norm.state_dict(), [lin.state_dict() for lin in linears]))
        _rebalance(norm, linears, act_max[norm_name], alpha)
        with torch.no_grad():
            exact = _same(module(*check), reference)
        if exact:
            smoothed.append({"norm": norm_name, "linears": linear_names})
        else:  # the LayerNorm also feeds something else (a post-LN residual): undo
            norm.load_state_dict(saved[0])
            for lin, state in zip(linears, saved[1], strict=True):
                lin.load_state_dict(state)
            rejected.append(norm_name)
    info: dict[str, Any] = {"alpha": alpha, "pairs": len(smoothed), "smoothed": smoothed}
    if rejected:
        info["not_applicable"] = (f"{len(rejected)} LayerNorm(s) also feed a residual "
                                  "connection (post-LN), so rescaling them would change the "
                                  "model; left as they were")
    return replace(model, module=module), info


def _same(output: Any, reference: Any) -> bool:
    """Whether every output tensor is unchanged (a model may return several)."""
    outs = output if isinstance(output, (tuple, list)) else (output,)
    refs = reference if isinstance(reference, (tuple, list)) else (reference,)
    return len(outs) == len(refs) and all(
        torch.allclose(o, r, rtol=1e-3, atol=1e-4) for o, r in zip(outs, refs, strict=True)
        if isinstance(o, torch.Tensor))


def _observe(module: nn.Module, model: Model, data: Dataset,
             batches: int) -> tuple[dict[str, list[str]], dict[str, torch.Tensor]]:
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # the tensor is kept so ids stay unique
    act_max: dict[str, torch.Tensor] = {}
    pairs: dict[str, list[str]] = {}
    hooks = []

    def norm_hook(name: str) -> Any:
        def hook(_: nn.Module, __: Any, out: torch.Tensor) -> None:
            produced[id(out)] = (name, out)
            amax = out.detach().abs().reshape(-1, out.shape[-1]).amax(dim=0)
            act_max[name] = torch.maximum(act_max[name], amax) if name in act_max else amax
        return hook

    def linear_hook(name: str) -> Any:
        def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
            found = produced.get(id(args[0]))
            if found is not None and found[1] is args[0] and \
                    name not in pairs.setdefault(found[0], []):
                pairs[found[0]].append(name)
        return hook

    for name, sub in module.named_modules():
        if isinstance(sub, nn.LayerNorm):
            hooks.append(sub.register_forward_hook(norm_hook(name)))
        elif isinstance(sub, nn.Linear):
            hooks.append(sub.register_forward_pre_hook(linear_hook(name)))
    try:
        with torch.no_grad():
            for i, (inputs, _) in enumerate(data.batches(8)):
                if i >= batches:
                    break
                produced.clear()
                module(*model.torch_args(inputs))
    finally:
        for hook in hooks:
            hook.remove()
    return pairs, act_max


def _rebalance(norm: Any, linears: list[Any], act_max: torch.Tensor, alpha: float) -> None:
    with torch.no_grad():
        w_max = torch.stack([lin.weight.abs().amax(dim=0) for lin in linears]).amax(dim=0)
        scale = (act_max.clamp(min=1e-5) ** alpha / w_max.clamp(min=1e-5) ** (1 - alpha))
        scale = scale.clamp(min=1e-2, max=1e2)
        norm.weight.div_(scale)
        if norm.bias is not None:
            norm.bias.div_(scale)
        for lin in linears:
            lin.weight.mul_(scale)
