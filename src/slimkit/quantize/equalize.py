"""Cross-layer equalization and bias correction (Nagel et al. 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction"), done in torch before export.

*Equalization.* For two convolutions in a row, ``conv_a -> [ReLU] -> conv_b``, with no other
user of the tensors in between, the output channel i of ``conv_a`` can be divided by ``s_i`` and
the input channel i of ``conv_b`` multiplied by ``s_i`` without changing the function (ReLU is
positively homogeneous). ``s_i = sqrt(r_a[i] / r_b[i])`` (r: the channel's weight range) gives
both layers the same per-channel range, which is what per-tensor weight scales need; depthwise
convolutions, whose channel ranges differ by orders of magnitude, gain the most. BatchNorms are
folded into their convolutions first. Pairs are found on the ``torch.fx`` graph; every change
is checked against the float outputs and undone if it is not exact (ReLU6 is not homogeneous,
so pairs through it are left alone and reported).

*Bias correction.* Quantizing a weight adds an error ``e = Q(W) - W`` whose mean effect on the
output, ``e @ E[x]``, is a per-channel bias shift. It is computed from the calibration data's
per-channel input means and subtracted from the layer's bias, so the quantized model's outputs
are centred on the float model's. ``Q`` mirrors the weight quantization ONNX Runtime applies
(symmetric int8, per channel or per tensor).

Neither is in ONNX Runtime's quantization tooling (its ``quantize_static`` has no CLE or bias
correction; the AIMET/NNCF implementations are tied to their own graph representations), so the
few lines are written here.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import fx, nn

from slimkit.data import Dataset
from slimkit.model import Model

HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.PReLU)
HOMOGENEOUS_FUNCTIONS = (torch.relu, torch.nn.functional.relu, torch.nn.functional.leaky_relu)
ITERATIONS = 4
SCALE_LIMITS = (1e-3, 1e3)


def equalize(model: Model, data: Dataset, *, per_channel: bool,
             bias_correction: bool = True) -> tuple[Model, dict[str, Any]]:
    """A copy of ``model`` with BatchNorms folded, conv pairs equalized and (optionally) biases
    corrected for the weight quantization error; and what was done.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> from slimkit.data import synthetic
        >>> m = tiny_model("cnn")
        >>> eq, info = equalize(m, synthetic(m.inputs, 8), per_channel=False)
        >>> info["batchnorm_folded"], info["pairs"]
        (['conv'], [])
    """
    from slimkit.quantize.qat import fold_batchnorm

    module = copy.deepcopy(model.require_module("equalization")).eval()
    check = model.torch_args(data.first_batch(4))
    with torch.no_grad():
        reference = module(*check)
    info: dict[str, Any] = {"batchnorm_folded": fold_batchnorm(module)}
    pairs, skipped = find_pairs(module)
    done = []
    for a_name, b_name in pairs:
        conv_a, conv_b = module.get_submodule(a_name), module.get_submodule(b_name)
        saved = copy.deepcopy((conv_a.state_dict(), conv_b.state_dict()))
        for _ in range(ITERATIONS):
            equalize_pair(conv_a, conv_b)
        with torch.no_grad():
            exact = torch.allclose(module(*check), reference, rtol=1e-3, atol=1e-4)
        if exact:
            done.append([a_name, b_name])
        else:
            conv_a.load_state_dict(saved[0])
            conv_b.load_state_dict(saved[1])
            skipped.append({"pair": [a_name, b_name], "why": "rescaling changed the outputs"})
    info["pairs"], info["skipped"] = done, skipped
    if bias_correction:
        info["bias_corrected"] = correct_biases(module, model, data, per_channel)
    return replace(model, module=module), info


def find_pairs(module: nn.Module) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """``(conv_a, conv_b)`` names joined by a homogeneous activation (or nothing), each tensor
    in between used once; and the pairs left alone (through a non-homogeneous activation)."""
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001 - untraceable: no pairs, the report says so
        return [], [{"pair": [], "why": "the model cannot be traced with torch.fx"}]
    modules = dict(module.named_modules())
    pairs, skipped = [], []
    for node in graph.nodes:
        if not _is_conv(node, modules):
            continue
        path: list[fx.Node] = []
        current = node
        while len(current.users) == 1:
            user = next(iter(current.users))
            if _is_conv(user, modules):
                if _is_homogeneous_path(path, modules):
                    pairs.append((str(node.target), str(user.target)))
                else:
                    skipped.append({"pair": [str(node.target), str(user.target)],
                                    "why": "the activation between them is not positively "
                                           "homogeneous (e.g. ReLU6)"})
                break
            if not _is_activation(user, modules):
                break
            path.append(user)
            current = user
    return pairs, skipped


def has_depthwise_pair(module: nn.Module) -> bool:
    """Whether a depthwise convolution is one side of an equalizable pair (BatchNorms folded
    on a copy first, as ``equalize`` does)."""
    from slimkit.quantize.qat import fold_batchnorm

    folded = copy.deepcopy(module).eval()
    fold_batchnorm(folded)
    pairs, _ = find_pairs(folded)
    return any(getattr(folded.get_submodule(name), "groups", 1) > 1
               for pair in pairs for name in pair)


def equalize_pair(conv_a: Any, conv_b: Any) -> None:
    """Rescale ``conv_a``'s output channels and ``conv_b``'s input channels to equal ranges."""
    with torch.no_grad():
        w_a, w_b = conv_a.weight, conv_b.weight
        range_a = w_a.abs().reshape(w_a.shape[0], -1).amax(dim=1)
        if conv_b.groups == 1:
            range_b = w_b.abs().transpose(0, 1).reshape(w_b.shape[1], -1).amax(dim=1)
        else:  # depthwise: output channel i reads input channel i only
            range_b = w_b.abs().reshape(w_b.shape[0], -1).amax(dim=1)
        scale = torch.sqrt(range_a / range_b.clamp(min=1e-12)).clamp(*SCALE_LIMITS)
        scale = torch.where(range_a > 0, scale, torch.ones_like(scale))
        w_a.div_(scale.reshape(-1, *([1] * (w_a.dim() - 1))))
        if conv_a.bias is not None:
            conv_a.bias.div_(scale)
        if conv_b.groups == 1:
            w_b.mul_(scale.reshape(1, -1, *([1] * (w_b.dim() - 2))))
        else:
            w_b.mul_(scale.reshape(-1, *([1] * (w_b.dim() - 1))))


def quantize_weight(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Symmetric int8 fake quantization of a weight, as ONNX Runtime quantizes it.

    Example:
        >>> w = torch.tensor([[1.0, -0.5, 0.25]])
        >>> quantize_weight(w, True).tolist() == w.tolist()
        False
        >>> float((quantize_weight(w, True) - w).abs().max()) <= 1.0 / 254
        True
    """
    flat = weight.reshape(weight.shape[0], -1)
    amax = flat.abs().amax(dim=1, keepdim=True) if per_channel else flat.abs().amax()
    scale = (amax / 127.0).clamp(min=1e-12)
    return (torch.round(flat / scale).clamp(-127, 127) * scale).reshape(weight.shape)


def correct_biases(module: nn.Module, model: Model, data: Dataset, per_channel: bool,
                   batches: int = 8) -> list[str]:
    """Subtract each conv/linear layer's expected output shift from its bias (added when
    missing); returns the corrected layer names."""
    means = _input_means(module, model, data, batches)
    corrected = []
    with torch.no_grad():
        for name, layer in module.named_modules():
            if name not in means or not isinstance(layer, (nn.Conv2d, nn.Linear)):
                continue
            error = quantize_weight(layer.weight, per_channel) - layer.weight
            shift = _expected_shift(layer, error, means[name])
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0]))
            layer.bias.sub_(shift)
            corrected.append(name)
    return corrected


def _expected_shift(layer: Any, error: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return error @ mean
    groups = layer.groups
    per_group_in = error.shape[1]
    summed = error.sum(dim=(2, 3))  # (out, in / groups): the mean is taken as spatially flat
    out_per_group = error.shape[0] // groups
    group_of_out = torch.arange(error.shape[0]) // out_per_group
    index = group_of_out[:, None] * per_group_in + torch.arange(per_group_in)[None, :]
    return (summed * mean[index]).sum(dim=1)


def _input_means(module: nn.Module, model: Model, data: Dataset,
                 batches: int) -> dict[str, torch.Tensor]:
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str) -> Any:
        def record(_: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            dims = [d for d in range(x.dim()) if d != (1 if x.dim() == 4 else x.dim() - 1)]
            sums[name] = sums.get(name, 0) + x.sum(dim=dims)
            counts[name] = counts.get(name, 0) + x.numel() // x.shape[1 if x.dim() == 4 else -1]
        return record

    hooks = [m.register_forward_pre_hook(hook(n)) for n, m in module.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            for i, (inputs, _) in enumerate(data.batches(16)):
                if i >= batches:
                    break
                module(*model.torch_args(inputs))
    finally:
        for h in hooks:
            h.remove()
    return {name: sums[name] / counts[name] for name in sums}


def _is_conv(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op != "call_module":
        return False
    conv = modules.get(str(node.target))
    return isinstance(conv, nn.Conv2d) and (conv.groups == 1 or
                                            conv.groups == conv.in_channels == conv.out_channels)


def _is_activation(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)),
                          (*HOMOGENEOUS, nn.ReLU6, nn.Hardtanh, nn.GELU, nn.SiLU))
    return node.op == "call_function" and (
        node.target in HOMOGENEOUS_FUNCTIONS or
        node.target in (torch.nn.functional.relu6, torch.nn.functional.hardtanh))


def _is_homogeneous_path(path: list[fx.Node], modules: dict[str, nn.Module]) -> bool:
    for node in path:
        if node.op == "call_module":
            sub = modules.get(str(node.target))
            if not isinstance(sub, HOMOGENEOUS) or isinstance(sub, nn.ReLU6):
                return False
        elif node.target not in HOMOGENEOUS_FUNCTIONS:
            return False
    return True
