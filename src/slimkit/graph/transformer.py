"""Transformer blocks recognised by structure, for pruning (see ``attention.py``): a *finder*
of ``FINDERS`` looks at a module's children and their shapes and returns the attention
(:class:`HeadSite`) and feed-forward (:class:`FFNSite`) sites it recognises; no autograd node
names and no class names are matched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from slimkit.graph.layers import SURGERY, Keep, Surgery
from slimkit.registry import Registry

HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads")  # query heads
KV_ATTRS = ("num_kv_heads", "num_key_value_heads", "n_kv_heads")  # key/value heads
DIM_ATTRS = ("head_dim", "attention_head_size")

@dataclass(frozen=True)
class HeadSite:
    """One attention: its projections, its head counts and the module holding them."""

    holder: str
    q: str
    k: str
    v: str
    o: str
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.q, self.k, self.v, self.o)

    @property
    def group(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.heads // self.kv_heads


@dataclass(frozen=True)
class FFNSite:
    """One feed-forward block: ``up`` layers make the neurons, ``down`` reads them."""

    up: tuple[str, ...]
    down: str
    neurons: int

    @property
    def layers(self) -> tuple[str, ...]:
        return (*self.up, self.down)


Site = HeadSite | FFNSite
Finder = Callable[[str, nn.Module], "list[Site]"]
FINDERS: Registry[Finder] = Registry("transformer block finder")


def _linear(module: nn.Module, *path: str) -> nn.Linear | None:
    for part in path:
        module = getattr(module, part, None)  # type: ignore[assignment]
        if not isinstance(module, nn.Module):
            return None
    return module if isinstance(module, nn.Linear) else None


def int_attr(module: nn.Module, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = module.__dict__.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _head_site(holder: str, module: nn.Module, q: str, k: str, v: str, o: str,
               o_layer: nn.Linear | None) -> HeadSite | None:
    """A site when the four projections agree with the holder's head size."""
    prefix = f"{holder}." if holder else ""
    layers = [_linear(module, *n.split(".")) for n in (q, k, v)]
    head_dim = int_attr(module, DIM_ATTRS)
    if head_dim is None or head_dim < 1 or o_layer is None or any(x is None for x in layers):
        return None
    q_l, k_l, v_l = (x for x in layers if x is not None)
    if q_l.out_features % head_dim or k_l.out_features % head_dim \
            or k_l.out_features != v_l.out_features or o_layer.in_features != q_l.out_features:
        return None
    heads, kv = q_l.out_features // head_dim, k_l.out_features // head_dim
    if kv < 1 or heads % kv:
        return None
    return HeadSite(holder, prefix + q, prefix + k, prefix + v, o, heads, kv, head_dim)


@FINDERS.register("qkv-self-output")
def bert_style(name: str, module: nn.Module) -> list[Site]:
    """BERT-family layers: ``attention.self.{query,key,value}`` + ``attention.output.dense``
    and ``intermediate.dense`` -> ``output.dense``."""
    sites: list[Site] = []
    attention = getattr(module, "attention", None)
    inner = getattr(attention, "self", None)
    prefix = f"{name}." if name else ""
    if isinstance(attention, nn.Module) and isinstance(inner, nn.Module):
        o_layer = _linear(attention, "output", "dense")
        site = _head_site(f"{prefix}attention.self", inner, "query", "key", "value",
                          f"{prefix}attention.output.dense", o_layer)
        if site is not None:
            sites.append(site)
    up, down = _linear(module, "intermediate", "dense"), _linear(module, "output", "dense")
    if up is not None and down is not None and up.out_features == down.in_features:
        sites.append(FFNSite((f"{prefix}intermediate.dense",), f"{prefix}output.dense",
                             up.out_features))
    return sites


@FINDERS.register("q-k-v-o-proj")
def proj_style(name: str, module: nn.Module) -> list[Site]:
    """LLaMA-style attention: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` and a
    ``head_dim``; key/value heads may be fewer (grouped-query attention)."""
    prefix = f"{name}." if name else ""
    site = _head_site(name, module, "q_proj", "k_proj", "v_proj", f"{prefix}o_proj",
                      _linear(module, "o_proj"))
    return [site] if site is not None else []


@FINDERS.register("mlp")
def mlp_style(name: str, module: nn.Module) -> list[Site]:
    """``fc1`` -> ``fc2`` (ViT/timm), or gated ``gate_proj``/``up_proj`` -> ``down_proj``."""
    prefix = f"{name}." if name else ""
    fc1, fc2 = _linear(module, "fc1"), _linear(module, "fc2")
    if fc1 is not None and fc2 is not None and fc1.out_features == fc2.in_features:
        return [FFNSite((f"{prefix}fc1",), f"{prefix}fc2", fc1.out_features)]
    gate, up, down = (_linear(module, n) for n in ("gate_proj", "up_proj", "down_proj"))
    if gate is not None and up is not None and down is not None \
            and gate.out_features == up.out_features == down.in_features:
        return [FFNSite((f"{prefix}gate_proj", f"{prefix}up_proj"), f"{prefix}down_proj",
                        up.out_features)]
    return []


def find_sites(module: nn.Module) -> list[Site]:
    """Every attention and FFN block of ``module`` the finders recognise, in module order.

    Example:
        >>> from slimkit.testing import tiny_vit
        >>> [type(s).__name__ for s in find_sites(tiny_vit())][:2]
        ['HeadSite', 'FFNSite']
    """
    sites: list[Site] = []
    claimed: set[str] = set()
    for name, sub in module.named_modules():
        for finder in FINDERS:
            for site in FINDERS.get(finder)(name, sub):
                if not claimed.intersection(site.layers):
                    claimed.update(site.layers)
                    sites.append(site)
    return sites


# ---- surgery of the module holding the head counts (attention modules) ----------------

def head_axes(module: Any) -> tuple[int, int | None]:
    return int_attr(module, HEAD_ATTRS) or 0, int_attr(module, KV_ATTRS)


def _rebuild_holder(old: Any, out_keep: Keep, in_keep: Keep) -> nn.Module:
    """A shallow copy with the new head counts (its children are the already rebuilt
    projections); ``old`` keeps its own counts."""
    new = copy.copy(old)
    for key in ("_modules", "_parameters", "_buffers"):
        new.__dict__[key] = dict(old.__dict__[key])
    heads = len(out_keep) if out_keep is not None else head_axes(old)[0]
    for name in HEAD_ATTRS:
        if name in old.__dict__:
            setattr(new, name, heads)
    for name in KV_ATTRS:
        if name in old.__dict__ and in_keep is not None:
            setattr(new, name, len(in_keep))
    if "all_head_size" in old.__dict__:
        new.all_head_size = heads * (int_attr(old, DIM_ATTRS) or 0)
    return new


HEAD_SURGERY = Surgery(head_axes, _rebuild_holder)


def surgery_for(type_name: str, layer: nn.Module) -> Surgery:
    """The surgery of a layer type (``SURGERY``), or of a module holding head counts."""
    if type_name not in SURGERY and int_attr(layer, HEAD_ATTRS) is not None:
        return HEAD_SURGERY
    return SURGERY.get(type_name)
