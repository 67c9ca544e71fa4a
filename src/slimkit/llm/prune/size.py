"""What a pruned model weighs: dense bytes, bytes in a sparse format, and compressed bytes.

Unstructured and N:M zeros leave every matrix its shape, so the dense file does not shrink and
dense runtimes do no less work; what shrinks is a format that skips the zeros. ``sparse_format``
counts the bytes of one such format exactly (no file is written): a bitmask of one bit per
weight plus the non-zero values, for every tensor where that is smaller than dense.
``compressed_bytes`` measures what a general-purpose compressor (zlib, as gzip) makes of the
fp32 tensors, the number a user sees when shipping the file.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch


def weight_bytes(hf: Any) -> dict[str, int]:
    """``dense``: fp32 bytes of the parameters; ``sparse_format``: the same with a bitmask +
    non-zero values wherever that is smaller; ``zeros``: weights that are exactly zero.

    Example:
        >>> w = torch.nn.Linear(8, 8, bias=False)
        >>> with torch.no_grad():
        ...     _ = w.weight[:, :4].zero_()
        >>> weight_bytes(w)
        {'dense': 256, 'sparse_format': 136, 'zeros': 32}
    """
    dense = sparse = zeros = 0
    for tensor in [p.detach() for p in _unique_parameters(hf)]:
        size = tensor.numel() * 4
        nonzero = int(torch.count_nonzero(tensor))
        dense += size
        zeros += tensor.numel() - nonzero
        sparse += min(size, (tensor.numel() + 7) // 8 + nonzero * 4)
    return {"dense": dense, "sparse_format": sparse, "zeros": zeros}


def _unique_parameters(hf: Any) -> list[torch.nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in hf.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            out.append(p)
    return out


def compressed_bytes(hf: Any, level: int = 6) -> int:
    """zlib-compressed bytes of every parameter's fp32 data (tied ones once)."""
    compressor = zlib.compressobj(level)
    total = 0
    for p in _unique_parameters(hf):
        data = p.detach().float().contiguous().numpy().tobytes()
        total += len(compressor.compress(data))
    return total + len(compressor.flush())
