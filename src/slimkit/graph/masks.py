"""Weight masks on a module (``torch.nn.utils.prune``'s re-parametrisation, weight = orig *
mask): which layers take them, copying a masked module, baking masks into plain weights, and a
module's weights as safetensors bytes. Unstructured pruning, clustering, Deep Compression and
data-parallel fine-tuning share these."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from slimkit.model import Model
from slimkit.selector import Layer, Selector

MASKED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def masked_layers(module: nn.Module, exclude: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    """The Conv and Linear layers whose weights get masks, without the excluded ones."""
    layers = [(name, sub) for name, sub in module.named_modules()
              if type(sub) in MASKED_TYPES and name]
    if not exclude:
        return layers
    chosen = {layer.name for layer in Selector(exclude).select(
        [Layer(name, type(sub).__name__, name) for name, sub in module.named_modules() if name])}
    return [(name, sub) for name, sub in layers
            if name not in chosen and not any(name.startswith(c + ".") for c in chosen)]


def finalize(model: Model) -> Model:
    """A copy of ``model`` with every mask baked into its weight (plain parameters again, the
    zeros kept); ``model`` keeps its masks, e.g. to go on fine-tuning.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> sparse = tiny_model("mlp")
        >>> _ = torch_prune.l1_unstructured(sparse.module.fc1, "weight", amount=0.5)
        >>> baked = finalize(sparse).module
        >>> sorted(n for n, _ in baked.fc1.named_parameters())
        ['bias', 'weight']
        >>> float((baked.fc1.weight == 0).float().mean())
        0.5
    """
    return replace(model, module=bake_masks(copy_masked(model.require_module("finalize"))))


def bake_masks(module: nn.Module) -> nn.Module:
    """Remove the pruning re-parametrisation of ``module`` in place (weight = orig * mask)."""
    for sub in module.modules():
        for buffer, _ in list(sub.named_buffers(recurse=False)):
            name = buffer.removesuffix("_mask")
            if buffer.endswith("_mask") and hasattr(sub, f"{name}_orig"):
                torch_prune.remove(sub, name)
    return module


def copy_masked(module: nn.Module) -> nn.Module:
    """A deep copy of a module that may carry masks (``copy.deepcopy`` refuses the masked
    weight, a non-leaf tensor; it is recomputed from orig * mask at every forward anyway)."""
    for sub in module.modules():
        for buffer, _ in sub.named_buffers(recurse=False):
            name = buffer.removesuffix("_mask")
            if buffer.endswith("_mask") and isinstance(getattr(sub, name, None), torch.Tensor):
                setattr(sub, name, getattr(sub, name).detach())
    return copy.deepcopy(module)


def has_masks(module: nn.Module) -> bool:
    return any(name.endswith("_mask") for name, _ in module.named_buffers())


def weights_bytes(module: nn.Module) -> bytes:
    """The module's state as safetensors bytes."""
    from safetensors.torch import save

    # each tensor is cloned: tied weights are stored (and load back) as equal copies
    return save({key: tensor.detach().contiguous().clone()
                 for key, tensor in module.state_dict().items()})
