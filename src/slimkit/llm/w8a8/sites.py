"""Where SmoothQuant's scales can be folded *exactly* in a decoder block, and the folding.

A site is a set of channels read by int8 MatMuls (the consumers) and written by something that
can absorb a per-channel division without changing the function:

* ``attn_in``: ``input_layernorm`` -> q/k/v (the RMSNorm weight is divided by ``s``);
* ``mlp_in``: ``post_attention_layernorm`` -> gate/up;
* ``attn_out``: v_proj -> o_proj. Attention mixes positions, never channels, so dividing v's
  output rows by ``s`` divides o_proj's input by ``s``. With grouped-query attention a v head
  feeds ``num_heads / kv_heads`` query heads: o_proj's columns of every query head of a group
  share the group's scale (statistics are pooled over the group);
* ``mlp_out``: up_proj -> down_proj, through ``silu(gate) * up``: the gate is nonlinear, the up
  path linear, so up's rows divided by ``s`` divide down_proj's input by ``s``.

The final norm -> LM head is no site: the head is tied to the embeddings in most small models
(folding would untie them) and stays float by default. Layouts are found through a registry
keyed by the Hugging Face ``model_type``; packed projections (Phi-3's ``qkv_proj`` and
``gate_up_proj``) name the rows that feed a site.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from slimkit.errors import InputError
from slimkit.registry import Registry

KINDS = ("attn_in", "attn_out", "mlp_in", "mlp_out")
NORM_KINDS = ("attn_in", "mlp_in")  # the source is a norm; else a Linear (rows: all or ``rows``)


@dataclass(frozen=True)
class Site:
    """One foldable site of one decoder layer.

    ``source`` is a norm (``rows`` None) or a Linear whose output rows ``rows`` are the site's
    channels; ``repeat``/``head_dim``: each source head feeds ``repeat`` consumer heads (GQA).
    """

    name: str  # e.g. "layers.3.mlp_out"
    kind: str
    source: str
    consumers: tuple[str, ...]
    rows: tuple[int, int] | None = None
    repeat: int = 1
    head_dim: int = 0

    def expand(self, scale: torch.Tensor) -> torch.Tensor:
        """A scale over the source channels laid out over the consumers' input channels."""
        if self.repeat == 1:
            return scale
        heads = scale.numel() // self.head_dim
        return scale.reshape(heads, 1, self.head_dim).expand(
            heads, self.repeat, self.head_dim).reshape(-1)

    def pool(self, per_input: torch.Tensor) -> torch.Tensor:
        """Per-consumer-input-channel maxima pooled onto the source channels."""
        if self.repeat == 1:
            return per_input
        return per_input.reshape(-1, self.repeat, self.head_dim).amax(dim=1).reshape(-1)


Layout = Callable[[Any], list[Site]]
LAYOUTS: Registry[Layout] = Registry("decoder layout for SmoothQuant")


def decoder_sites(hf: Any) -> list[Site]:
    """Every foldable site of ``hf`` (a transformers ``*ForCausalLM``)."""
    model_type = str(getattr(hf.config, "model_type", ""))
    if model_type not in LAYOUTS:
        raise InputError(f"W8A8 smoothing does not know the layout of model type "
                         f"'{model_type}'; supported: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS.get(model_type)(hf)


def _heads(config: Any) -> tuple[int, int, int]:
    heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return heads, kv, head_dim


def llama_sites(hf: Any) -> list[Site]:
    """Llama, Mistral, Qwen2, Qwen3: separate q/k/v and gate/up projections."""
    heads, kv, head_dim = _heads(hf.config)
    sites = []
    for i in range(int(hf.config.num_hidden_layers)):
        p = f"model.layers.{i}"
        sites += [
            Site(f"layers.{i}.attn_in", "attn_in", f"{p}.input_layernorm",
                 tuple(f"{p}.self_attn.{n}_proj" for n in "qkv")),
            Site(f"layers.{i}.attn_out", "attn_out", f"{p}.self_attn.v_proj",
                 (f"{p}.self_attn.o_proj",), repeat=heads // kv, head_dim=head_dim),
            Site(f"layers.{i}.mlp_in", "mlp_in", f"{p}.post_attention_layernorm",
                 (f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj")),
            Site(f"layers.{i}.mlp_out", "mlp_out", f"{p}.mlp.up_proj", (f"{p}.mlp.down_proj",)),
        ]
    return sites


def phi3_sites(hf: Any) -> list[Site]:
    """Phi-3: packed ``qkv_proj`` (q, k, v rows) and ``gate_up_proj`` (gate rows, then up)."""
    heads, kv, head_dim = _heads(hf.config)
    v_rows = ((heads + kv) * head_dim, (heads + 2 * kv) * head_dim)
    inter = int(hf.config.intermediate_size)
    sites = []
    for i in range(int(hf.config.num_hidden_layers)):
        p = f"model.layers.{i}"
        sites += [
            Site(f"layers.{i}.attn_in", "attn_in", f"{p}.input_layernorm",
                 (f"{p}.self_attn.qkv_proj",)),
            Site(f"layers.{i}.attn_out", "attn_out", f"{p}.self_attn.qkv_proj",
                 (f"{p}.self_attn.o_proj",), rows=v_rows, repeat=heads // kv, head_dim=head_dim),
            Site(f"layers.{i}.mlp_in", "mlp_in", f"{p}.post_attention_layernorm",
                 (f"{p}.mlp.gate_up_proj",)),
            Site(f"layers.{i}.mlp_out", "mlp_out", f"{p}.mlp.gate_up_proj",
                 (f"{p}.mlp.down_proj",), rows=(inter, 2 * inter)),
        ]
    return sites


for _name in ("llama", "mistral", "qwen2", "qwen3"):
    LAYOUTS.register(_name)(llama_sites)
LAYOUTS.register("phi3")(phi3_sites)


@torch.no_grad()
def fold(hf: Any, site: Site, scale: torch.Tensor) -> None:
    """Divide the site's channels by ``scale`` at their source and multiply the consumers'
    weight columns by it (in place); the model's function is unchanged."""
    source = hf.get_submodule(site.source)
    if site.kind in NORM_KINDS:  # a norm: its weight (and bias, if any) scales its output
        source.weight.div_(scale)
        if getattr(source, "bias", None) is not None:
            source.bias.div_(scale)
    else:
        lo, hi = site.rows or (0, source.weight.shape[0])
        source.weight[lo:hi].div_(scale[:, None])
        if source.bias is not None:
            source.bias[lo:hi].div_(scale)
    wide = site.expand(scale)
    for name in site.consumers:
        hf.get_submodule(name).weight.mul_(wide)


def source_channels(hf: Any, site: Site) -> int:
    """How many channels the site's source writes."""
    if site.rows is not None:
        return site.rows[1] - site.rows[0]
    weight = hf.get_submodule(site.source).weight
    return int(weight.numel() if site.kind in NORM_KINDS else weight.shape[0])
