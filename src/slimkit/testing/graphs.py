"""Plain-torch graphs of the kinds users write, for the coverage corpus: recurrent models over
token ids, ``nn.TransformerEncoder``, 1-D convolutions, a model with an image and a table
input, channel split + shuffle (ShuffleNet V2), grouped convolutions with a shuffle
(ShuffleNet V1), squeeze-and-excitation, GroupNorm, a token model with fused qkv, rotary
embeddings, grouped-query attention and tied embeddings, and a ViT-like model with a class
token, LayerScale and a relative position table. ``graph_model(name)`` gives a seeded Model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec

VOCAB = 50


class RNNClassifier(nn.Module):
    """Token ids -> embedding -> (bi)LSTM or GRU -> last step -> classes."""

    def __init__(self, cell: str = "lstm", bidirectional: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(16, 32, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(64 if bidirectional else 32, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(ids))
        return self.head(out[:, -1])


class TokenTransformer(nn.Module):
    """Token ids and a padding mask -> nn.TransformerEncoder -> mean -> classes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=128, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(ids), src_key_padding_mask=mask == 0)
        return self.head(hidden.mean(1))


class Conv1dNet(nn.Module):
    """Audio-like (batch, channels, time): Conv1d + BatchNorm1d blocks with a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(4, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU())
        self.block = nn.Sequential(nn.Conv1d(32, 32, 3, padding=1), nn.BatchNorm1d(32),
                                   nn.ReLU(), nn.Conv1d(32, 32, 3, padding=1))
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.block(x))
        return self.head(x.mean(-1))


class ImageAndTable(nn.Module):
    """An image branch (CNN) and a table branch (MLP), concatenated into one head."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mlp = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, image: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.cnn(image), self.mlp(table)], dim=1))


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleV2Block(nn.Module):
    """ShuffleNet V2 unit: split channels in two, transform one half (1x1, depthwise 3x3,
    1x1), concatenate, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, change = x.chunk(2, dim=1)
        return _shuffle(torch.cat([keep, self.branch(change)], dim=1), 2)


class ShuffleV1Block(nn.Module):
    """ShuffleNet V1 unit: grouped 1x1, shuffle, depthwise 3x3, grouped 1x1, residual."""

    def __init__(self, channels: int, groups: int = 4) -> None:
        super().__init__()
        self.groups = groups
        self.reduce = nn.Sequential(nn.Conv2d(channels, channels, 1, groups=groups, bias=False),
                                    nn.BatchNorm2d(channels), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1,
                                                 groups=channels, bias=False),
                                       nn.BatchNorm2d(channels))
        self.expand = nn.Sequential(nn.Conv2d(channels, channels, 1, groups=groups, bias=False),
                                    nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _shuffle(self.reduce(x), self.groups)
        return F.relu(x + self.expand(self.depthwise(y)))


class ShuffleNet(nn.Module):
    def __init__(self, version: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(32), nn.ReLU())
        block = ShuffleV2Block if version == 2 else ShuffleV1Block
        self.blocks = nn.Sequential(block(32), block(32))
        self.head = nn.Sequential(nn.Conv2d(32, 64, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.expand(F.silu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * scale


class SENet(nn.Module):
    """Depthwise + pointwise stacks with squeeze-and-excitation and GroupNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GroupNorm(4, 32),
                                  nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.GroupNorm(4, 32),
                                nn.SiLU())
        self.se = SqueezeExcite(32, 8)
        self.pw = nn.Sequential(nn.Conv2d(32, 48, 1), nn.GroupNorm(4, 48))
        self.head = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.se(self.dw(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _rotate(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class FusedQKVAttention(nn.Module):
    """One fused qkv projection, grouped-query attention (8 query heads, 2 key/value heads)
    and rotary position embeddings."""

    freqs: torch.Tensor

    def __init__(self, dim: int = 32, heads: int = 8, kv_heads: int = 2) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.qkv = nn.Linear(dim, (heads + 2 * kv_heads) * self.head_dim, bias=False)
        self.out = nn.Linear(heads * self.head_dim, dim, bias=False)
        freqs = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(b, s, -1, self.head_dim).transpose(1, 2)
        k = k.view(b, s, -1, self.head_dim).transpose(1, 2)
        v = v.view(b, s, -1, self.head_dim).transpose(1, 2)
        angles = torch.arange(s, dtype=torch.float32)[:, None] * self.freqs[None, :]
        cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
        q, k = q * cos + _rotate(q) * sin, k * cos + _rotate(k) * sin
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        attn = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim ** 0.5, dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, s, -1))


class TiedLM(nn.Module):
    """Token ids -> blocks of fused-qkv rotary GQA attention and a gated MLP -> logits from
    the embedding matrix (tied)."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.attn = nn.ModuleList([FusedQKVAttention(dim) for _ in range(2)])
        self.norms = nn.ModuleList([nn.RMSNorm(dim) for _ in range(4)])
        self.up = nn.ModuleList([nn.Linear(dim, 128, bias=False) for _ in range(2)])
        self.gate = nn.ModuleList([nn.Linear(dim, 128, bias=False) for _ in range(2)])
        self.down = nn.ModuleList([nn.Linear(128, dim, bias=False) for _ in range(2)])
        self.lm_head = nn.Linear(dim, VOCAB, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for i in range(2):
            x = x + self.attn[i](self.norms[2 * i](x))
            h = self.norms[2 * i + 1](x)
            x = x + self.down[i](F.silu(self.gate[i](h)) * self.up[i](h))
        return self.lm_head(x)


class ScaledBlock(nn.Module):
    """A pre-norm block with LayerScale and a relative position bias table per head."""

    index: torch.Tensor

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn(2 * tokens - 1, heads) * 0.02)
        index = torch.arange(tokens)[:, None] - torch.arange(tokens)[None, :] + tokens - 1
        self.register_buffer("index", index, persistent=False)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.gamma1 = nn.Parameter(torch.full((dim,), 0.1))
        self.gamma2 = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = self.table[self.index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)
        attn = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 + bias, dim=-1)
        x = x + self.gamma1 * self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))
        return x + self.gamma2 * self.fc2(F.gelu(self.fc1(self.norm2(x))))


class PatchViT(nn.Module):
    """Patch embedding, a class token, learned positions, LayerScale blocks with relative
    position tables, classification from the class token."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.Sequential(ScaledBlock(dim, 4, 17), ScaledBlock(dim, 4, 17))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos
        return self.head(self.norm(self.blocks(tokens))[:, 0])


IDS = (TensorSpec("ids", (DYNAMIC_BATCH, "sequence"), "int64", VOCAB, (2, 64)),)
IMAGE = (TensorSpec("image", (DYNAMIC_BATCH, 3, 16, 16)),)
GRAPHS: dict[str, tuple[Callable[[], nn.Module], tuple[TensorSpec, ...]]] = {
    "lstm": (lambda: RNNClassifier("lstm"), IDS),
    "gru-bidirectional": (lambda: RNNClassifier("gru", bidirectional=True), IDS),
    "transformer-encoder": (TokenTransformer, (*IDS, TensorSpec(
        "mask", (DYNAMIC_BATCH, "sequence"), "int64", None, (2, 64)))),
    "conv1d": (Conv1dNet, (TensorSpec("signal", (DYNAMIC_BATCH, 4, "time"), "float32", None,
                                      (8, 4096)),)),
    "image-and-table": (ImageAndTable, (*IMAGE, TensorSpec("table", (DYNAMIC_BATCH, 10)))),
    "shufflenet-v2": (lambda: ShuffleNet(2), IMAGE),
    "shufflenet-v1": (lambda: ShuffleNet(1), IMAGE),
    "se-groupnorm": (SENet, IMAGE),
    "tied-rotary-gqa-lm": (TiedLM, IDS),
    "layerscale-vit": (PatchViT, IMAGE),
}
FAST_GRAPHS = ("lstm", "image-and-table", "tied-rotary-gqa-lm")


def graph_model(name: str, seed: int = 0) -> Model:
    """Plain-torch graph ``name`` (``GRAPHS``) as a Model, weights seeded, in eval mode.

    Example:
        >>> graph_model("image-and-table").input_names
        ('image', 'table')
    """
    build, inputs = GRAPHS[name]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = build().eval()
    return Model(name=name, source=f"slimkit.testing.graphs:{name}", module=module,
                 inputs=inputs, task=Task.CLASSIFICATION if name != "tied-rotary-gqa-lm"
                 else Task.OTHER)
