"""Tiny transformers in plain torch for pruning tests: a ViT/BERT-style encoder (multi-head
attention + GELU FFN) and a token model with grouped-query attention and a gated MLP.

Their attention reads the number of heads from the projections' shapes (``view(..., -1,
head_dim)``), as Hugging Face models do, so removing heads needs only smaller projections and
the new counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec

M = TypeVar("M", bound=nn.Module)


class Attention(nn.Module):
    """Self-attention with ``num_heads`` query heads and ``num_kv_heads`` key/value heads
    (grouped-query attention when fewer; each key/value head serves a group of query heads)."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, num_heads * self.head_dim)
        self.k_proj = nn.Linear(dim, self.num_kv_heads * self.head_dim)
        self.v_proj = nn.Linear(dim, self.num_kv_heads * self.head_dim)
        self.o_proj = nn.Linear(num_heads * self.head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        group = self.num_heads // self.num_kv_heads
        if group > 1:  # each key/value head serves ``group`` consecutive query heads
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        weights = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, seq, -1)
        return self.o_proj(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class GatedMLP(nn.Module):
    """LLaMA's SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """A pre-norm transformer block."""

    def __init__(self, attn: Attention, mlp: nn.Module, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patches of a 3x16x16 image (4x4 conv stem) -> 2 encoder blocks -> mean -> classes."""

    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 64, depth: int = 2,
                 classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(Attention(dim, heads), FeedForward(dim, hidden), dim)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


class TinyGQA(nn.Module):
    """Token ids -> embedding -> 2 blocks with grouped-query attention (8 query heads, 2
    key/value heads) and gated MLPs -> per-token logits."""

    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 8, kv_heads: int = 2,
                 hidden: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.Sequential(*(Block(Attention(dim, heads, kv_heads),
                                            GatedMLP(dim, hidden), dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(self.blocks(self.embed(input_ids))))


def _seeded(build: Callable[[], M]) -> M:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build().eval()


def tiny_vit() -> TinyViT:
    """A factory for ``slimkit.testing.transformers:tiny_vit`` (seeded, so weights repeat)."""
    return _seeded(TinyViT)


def tiny_gqa() -> TinyGQA:
    return _seeded(TinyGQA)


def tiny_transformer(kind: str = "vit") -> Model:
    """A Model handle on the tiny ViT (input 3x16x16) or the grouped-query token model
    (``gqa``: token ids, any sequence length).

    Example:
        >>> tiny_transformer("gqa").module(torch.zeros(2, 5, dtype=torch.long)).shape
        torch.Size([2, 5, 64])
    """
    if kind == "vit":
        return Model(name="tiny-vit", source="slimkit.testing.transformers:tiny_vit",
                     module=tiny_vit(), inputs=(TensorSpec("input", (DYNAMIC_BATCH, 3, 16, 16)),),
                     task=Task.CLASSIFICATION)
    if kind == "gqa":
        return Model(name="tiny-gqa", source="slimkit.testing.transformers:tiny_gqa",
                     module=tiny_gqa(),
                     inputs=(TensorSpec("input_ids", (DYNAMIC_BATCH, "sequence"), "int64", 64),),
                     output_names=("logits",), task=Task.OTHER)
    raise ValueError(f"unknown tiny transformer '{kind}'; known: vit, gqa")
