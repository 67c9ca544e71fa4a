"""The factorisations, each a handler in ``FACTORIZERS``: its spectra (singular values of the
unfoldings that choose the ranks), an empty skeleton of the replacement (for replaying a plan),
the filling of the skeleton from the original weights, and its MACs.

- ``linear``: W (out x in) = U S Vh -> Linear(in, r) with sqrt(S) Vh, then Linear(r, out) with
  U sqrt(S) and the bias.
- ``conv-channel``: the k x k kernel as an O x (I k k) matrix (Jaderberg et al.'s channel
  decomposition): a k x k conv with r outputs (stride, padding, dilation kept), then a 1x1 conv;
  for a 1x1 convolution this is the SVD of a Linear over channels.
- ``conv-tucker2``: Tucker-2 by HOSVD (Kim et al., 2016): a 1x1 conv I -> r2, the k x k core
  r2 -> r1, a 1x1 conv r1 -> O. Exact padding: a bias-free 1x1 conv commutes with padding.

Written by hand because torch has the SVD but no layer factorisation; tensorly would add a
dependency for one HOSVD (two eigendecompositions and an einsum).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from slimkit.registry import Registry


@dataclass(frozen=True)
class Geometry:
    """Where a layer runs for one example: positions (tokens or pixels) of its input and
    output (equal for Linear)."""

    positions_in: int
    positions_out: int


@dataclass(frozen=True)
class Spectrum:
    """Singular values (descending) of one unfolding and the singular vectors (columns of
    ``basis``) on its ``left`` (row) or right side."""

    values: torch.Tensor
    basis: torch.Tensor
    left: bool


@dataclass(frozen=True)
class Factorizer:
    decompose: Callable[[nn.Module], list[Spectrum]]
    skeleton: Callable[[nn.Module, tuple[int, ...]], nn.Module]
    fill: Callable[[nn.Module, nn.Module, tuple[int, ...], list[Spectrum]], float]  # -> energy
    macs: Callable[[nn.Module, tuple[int, ...] | None, Geometry], int]  # None: original


FACTORIZERS: Registry[Factorizer] = Registry("factorisation")


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest rank whose squared singular values reach ``energy`` of the total.

    Example:
        >>> energy_rank(torch.tensor([3.0, 1.0, 0.0]), 0.9), energy_rank(torch.ones(4), 1.0)
        (1, 4)
    """
    power = singular_values.double() ** 2
    total = float(power.sum())
    if total == 0.0:
        return 1
    cumulative = torch.cumsum(power, 0) / total
    return int(torch.searchsorted(cumulative, torch.tensor(energy - 1e-12,
                                                           dtype=torch.float64))) + 1


def spectrum(matrix: torch.Tensor, side: str = "small") -> Spectrum:
    """The singular values and vectors of ``matrix`` from the eigendecomposition of its Gram
    matrix on the ``small`` side (or the ``left`` side): one GEMM and a small ``eigh``, several
    times faster than a full SVD of a wide matrix; float64 keeps the precision.

    Example:
        >>> s = spectrum(torch.diag(torch.tensor([1.0, 3.0])))
        >>> [round(float(v), 6) for v in s.values]
        [3.0, 1.0]
    """
    m = matrix.detach().double()
    left = side == "left" or m.shape[0] <= m.shape[1]
    gram = m @ m.T if left else m.T @ m
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    return Spectrum(evals[order].clamp(min=0).sqrt(), evecs[:, order], left)


def _split_factors(matrix: torch.Tensor, rank: int,
                   spec: Spectrum) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``matrix ~ left @ right`` with inner size ``rank`` (the best rank-r approximation, its
    singular values split evenly between the factors) and the share of energy kept."""
    m = matrix.detach().double()
    basis, values = spec.basis[:, :rank], spec.values[:rank]
    root = values.sqrt().clamp(min=1e-12)
    if spec.left:  # basis = U_r: right = U_r^T M = S_r Vh_r
        left, right = basis * root, (basis.T @ m) / root[:, None]
    else:  # basis = V_r: left = M V_r = U_r S_r
        left, right = (m @ basis) / root, root[:, None] * basis.T
    energy = float((values**2).sum() / (spec.values**2).sum().clamp(min=1e-300))
    return left, right, energy


def _copy(target: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        target.copy_(value.reshape(target.shape).to(target.dtype))


def weight_of(layer: nn.Module) -> torch.Tensor:
    """The ``weight`` tensor of a Linear or convolution."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} has no weight tensor")
    return weight


def _part(new: nn.Module, index: int) -> nn.Module:
    return cast(nn.Sequential, new)[index]


def _bias_of(layer: nn.Module) -> torch.Tensor | None:
    bias = getattr(layer, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None


# ---- Linear ----

def _matrix(layer: nn.Module) -> torch.Tensor:
    weight = weight_of(layer)
    return weight.reshape(weight.shape[0], -1)


def _linear_skeleton(layer: nn.Module, ranks: tuple[int, ...]) -> nn.Module:
    (r,) = ranks
    bias = _bias_of(layer) is not None
    out_f, in_f = _matrix(layer).shape
    return nn.Sequential(nn.Linear(in_f, r, bias=False), nn.Linear(r, out_f, bias=bias))


def _linear_fill(new: nn.Module, layer: nn.Module, ranks: tuple[int, ...],
                 spectra: list[Spectrum]) -> float:
    left, right, energy = _split_factors(_matrix(layer), ranks[0], spectra[0])
    _copy(weight_of(_part(new, 0)), right)
    _copy(weight_of(_part(new, 1)), left)
    bias = _bias_of(layer)
    if bias is not None:
        _copy(cast(torch.Tensor, _bias_of(_part(new, 1))), bias)
    return energy


def _linear_macs(layer: nn.Module, ranks: tuple[int, ...] | None, g: Geometry) -> int:
    out_f, in_f = _matrix(layer).shape
    per_position = out_f * in_f if ranks is None else ranks[0] * (in_f + out_f)
    return per_position * g.positions_out


FACTORIZERS.register("linear")(Factorizer(
    decompose=lambda layer: [spectrum(_matrix(layer))], skeleton=_linear_skeleton,
    fill=_linear_fill, macs=_linear_macs))


# ---- k x k convolution: channel (spatial) SVD ----

def _conv_first(layer: nn.Conv2d, out_channels: int, kernel: bool) -> nn.Conv2d:
    """A bias-free conv from the layer's inputs to ``out_channels``, with its kernel, stride,
    padding and dilation (``kernel``) or as a 1x1 conv."""
    if not kernel:
        return nn.Conv2d(layer.in_channels, out_channels, 1, bias=False)
    return nn.Conv2d(layer.in_channels, out_channels, layer.kernel_size,  # type: ignore[arg-type]
                     layer.stride, layer.padding, layer.dilation,  # type: ignore[arg-type]
                     bias=False, padding_mode=layer.padding_mode)


def _channel_skeleton(layer: nn.Module, ranks: tuple[int, ...]) -> nn.Module:
    conv = cast(nn.Conv2d, layer)  # the api routes only Conv2d here
    (r,) = ranks
    return nn.Sequential(_conv_first(conv, r, kernel=True),
                         nn.Conv2d(r, conv.out_channels, 1, bias=_bias_of(conv) is not None))


def _conv_size(layer: nn.Module) -> tuple[int, int, int]:
    """(out channels, in channels, kernel elements) of a Conv2d."""
    o, i, kh, kw = weight_of(layer).shape
    return o, i, kh * kw


def _channel_macs(layer: nn.Module, ranks: tuple[int, ...] | None, g: Geometry) -> int:
    o, i, k = _conv_size(layer)
    if ranks is None:
        return o * i * k * g.positions_out
    return ranks[0] * (i * k + o) * g.positions_out


FACTORIZERS.register("conv-channel")(Factorizer(
    decompose=lambda layer: [spectrum(_matrix(layer))], skeleton=_channel_skeleton,
    fill=_linear_fill, macs=_channel_macs))


# ---- k x k convolution: Tucker-2 ----

def _unfold(weight: torch.Tensor, mode: int) -> torch.Tensor:
    return weight.detach().double().movedim(mode, 0).reshape(weight.shape[mode], -1)


def _tucker_skeleton(layer: nn.Module, ranks: tuple[int, ...]) -> nn.Module:
    conv = cast(nn.Conv2d, layer)  # the api routes only Conv2d here
    r_out, r_in = ranks
    core = nn.Conv2d(r_in, r_out, conv.kernel_size, conv.stride,  # type: ignore[arg-type]
                     conv.padding, conv.dilation, bias=False,  # type: ignore[arg-type]
                     padding_mode=conv.padding_mode)
    return nn.Sequential(_conv_first(conv, r_in, kernel=False), core,
                         nn.Conv2d(r_out, conv.out_channels, 1,
                                   bias=_bias_of(conv) is not None))


def _tucker_fill(new: nn.Module, layer: nn.Module, ranks: tuple[int, ...],
                 spectra: list[Spectrum]) -> float:
    weight = weight_of(layer).detach().double()
    r_out, r_in = ranks
    u_out, u_in = spectra[0].basis[:, :r_out], spectra[1].basis[:, :r_in]
    core = torch.einsum("oihw,or,is->rshw", weight, u_out, u_in)
    _copy(weight_of(_part(new, 0)), u_in.T)
    _copy(weight_of(_part(new, 1)), core)
    _copy(weight_of(_part(new, 2)), u_out)
    bias = _bias_of(layer)
    if bias is not None:
        _copy(cast(torch.Tensor, _bias_of(_part(new, 2))), bias)
    # orthonormal projections: the energy kept is the core's share
    return float((core**2).sum() / (weight**2).sum().clamp(min=1e-300))


def _tucker_macs(layer: nn.Module, ranks: tuple[int, ...] | None, g: Geometry) -> int:
    o, i, k = _conv_size(layer)
    if ranks is None:
        return o * i * k * g.positions_out
    r_out, r_in = ranks
    return i * r_in * g.positions_in + (r_in * r_out * k + r_out * o) * g.positions_out


FACTORIZERS.register("conv-tucker2")(Factorizer(
    decompose=lambda layer: [spectrum(_unfold(weight_of(layer), 0), "left"),
                             spectrum(_unfold(weight_of(layer), 1), "left")],
    skeleton=_tucker_skeleton, fill=_tucker_fill, macs=_tucker_macs))


def build(kind: str, layer: nn.Module, ranks: tuple[int, ...],
          spectra: list[Spectrum] | None = None) -> tuple[nn.Module, float]:
    """The factorised replacement of ``layer`` and the share of its energy it keeps
    (``spectra``: the layer's decomposition when already computed)."""
    handler = FACTORIZERS.get(kind)
    new = handler.skeleton(layer, ranks)
    energy = handler.fill(new, layer, ranks, spectra or handler.decompose(layer))
    return new.to(weight_of(layer).dtype).train(layer.training), energy
