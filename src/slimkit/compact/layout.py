"""How one tensor is laid out in a ``.slim`` file: measured, smallest wins, always lossless.

Layouts of the (optionally sparse) values:

* ``dense``: the values themselves, as float16 when every value is exactly a float16 (else
  float32), as bytes.
* ``codebook``: at most 256 distinct values (a clustered layer): the sorted codebook plus one
  bit-packed index per value (``ceil(log2 K)`` bits).
* ``rows``: one codebook per output channel (row of the first axis; per-channel clustering):
  a ``rows x K`` codebook (zero-padded) plus one index per value into its row's codebook.

``sparse`` (for tensors with zeros) first stores the positions of the non-zero values as
Deep Compression's relative indices: the gap to the previous non-zero, in symbols of ``b``
bits where the largest symbol ``2**b - 1`` means "skip that many positions, no value here"
(``b = 1`` is a unary bitmask); ``b`` is chosen by measurement. Only the non-zero values then
follow, in one of the layouts above; zeros are not a codebook entry.

Every stream goes through :func:`slimkit.compact.codecs.encode_best`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimkit.compact.codecs import ALL_CODECS, decode, encode_best

MAX_CODEBOOK = 256
GAP_BITS = range(1, 9)


@dataclass
class Encoded:
    """One tensor's manifest entry (``layout``, ``sparse``, ``store``, ``streams``) and bytes."""

    entry: dict[str, Any]
    data: bytes


def encode_float(values: np.ndarray, codecs: tuple[str, ...] = ALL_CODECS) -> Encoded:
    """The smallest lossless encoding of a float32 array over every applicable layout.

    Example:
        >>> w = np.array([[0, 0.5, 0, 0.25], [0.5, 0, 0, 0]], dtype=np.float32)
        >>> enc = encode_float(w)
        >>> np.array_equal(decode_float(enc.entry, enc.data, w.shape), w)
        True
    """
    flat = np.ascontiguousarray(values, dtype=np.float32).ravel()
    rows = values.shape[0] if values.ndim >= 2 else 1
    candidates = [_encode_values(flat, np.arange(flat.size), rows, flat.size, codecs, None)]
    nonzero = np.flatnonzero(flat)
    if len(nonzero) < flat.size:
        positions = _encode_positions(nonzero, flat.size, codecs)
        candidates.append(_encode_values(flat[nonzero], nonzero, rows, flat.size, codecs,
                                         positions))
    return min(candidates, key=lambda enc: len(enc.data))


def decode_float(entry: dict[str, Any], data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 array of an entry written by :func:`encode_float`; damaged or inconsistent
    data raises ``ValueError``."""
    size = math.prod(shape)
    rows = shape[0] if len(shape) >= 2 else 1
    streams = iter(_split(entry["streams"], data))
    if entry["sparse"]:
        index = _gaps_to_positions(decode(*next(streams)), int(entry["streams"][0][2]), size)
    else:
        index = np.arange(size)
    store = np.dtype(entry["store"])
    if entry["layout"] == "dense":
        values = _floats(next(streams), store)
    else:
        book = _floats(next(streams), store)
        codes = decode(*next(streams))
        if entry["layout"] == "codebook":
            values = book[_checked(codes, len(book))]
        else:
            book = book.reshape(rows, -1)
            values = book[index // (size // rows), _checked(codes, book.shape[1])]
    if len(values) != len(index):
        raise ValueError(f"{len(values)} values for {len(index)} positions")
    out = np.zeros(size, dtype=np.float32)
    out[index] = values
    return out.reshape(shape)


def _encode_values(values: np.ndarray, index: np.ndarray, rows: int, size: int,
                   codecs: tuple[str, ...], positions: tuple[list[Any], bytes] | None) -> Encoded:
    store = "float16" if _exact_half(values) else "float32"
    options = [("dense", [_float_stream(values, store)])]
    book, codes = np.unique(values, return_inverse=True)
    if 0 < len(book) <= MAX_CODEBOOK:
        options.append(("codebook", [_float_stream(book, store), (codes, _bits(len(book)))]))
    if rows > 1 and len(values):
        table, row_codes = _row_codebooks(values, index // (size // rows), rows)
        if table.shape[1] <= MAX_CODEBOOK:
            options.append(("rows", [_float_stream(table.ravel(), store),
                                     (row_codes, _bits(table.shape[1]))]))
    best: Encoded | None = None
    for layout, streams in options:
        encoded = [encode_best(symbols, bits, codecs) for symbols, bits in streams]
        meta = [[name, len(symbols), bits, len(blob)]
                for (symbols, bits), (name, blob, _) in zip(streams, encoded, strict=True)]
        data = b"".join(blob for _, blob, _ in encoded)
        if positions is not None:
            meta, data = [positions[0], *meta], positions[1] + data
        entry = {"layout": layout, "sparse": positions is not None, "store": store,
                 "streams": meta}
        if best is None or len(data) < len(best.data):
            best = Encoded(entry, data)
    if best is None:
        raise ValueError("no layout applies")  # unreachable: dense always applies
    return best


def _encode_positions(nonzero: np.ndarray, size: int,
                      codecs: tuple[str, ...]) -> tuple[list[Any], bytes]:
    """The relative-index stream of the smallest gap width (measured)."""
    best: tuple[list[Any], bytes] | None = None
    for bits in GAP_BITS:
        symbols = _positions_to_gaps(nonzero, bits)
        name, blob, _ = encode_best(symbols, bits, codecs)
        if best is None or len(blob) < len(best[1]):
            best = ([name, len(symbols), bits, len(blob)], blob)
        if (1 << bits) > size:
            break
    if best is None:
        raise ValueError("no gap width applies")
    return best


def _positions_to_gaps(nonzero: np.ndarray, bits: int) -> np.ndarray:
    """Deep Compression's relative indices with escape symbol ``2**bits - 1``.

    Example:
        >>> _positions_to_gaps(np.array([0, 5, 6]), 2).tolist()
        [0, 3, 1, 0]
    """
    escape = (1 << bits) - 1
    gaps = np.diff(np.concatenate([[-1], nonzero])) - 1
    skips, rest = np.divmod(gaps, escape)
    out = np.full(len(nonzero) + int(skips.sum()), escape, dtype=np.int64)
    out[np.cumsum(skips + 1) - 1] = rest
    return out


def _gaps_to_positions(symbols: np.ndarray, bits: int, size: int) -> np.ndarray:
    escape = (1 << bits) - 1
    is_skip = symbols == escape
    ends = np.cumsum(np.where(is_skip, escape, symbols + 1))
    index = ends[~is_skip] - 1
    if len(index) and (index[-1] >= size or index[0] < 0):
        raise ValueError(f"sparse positions run past the tensor's {size} elements")
    return index


def _row_codebooks(values: np.ndarray, row: np.ndarray, rows: int) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """Per-row sorted codebooks (``rows x K``, zero-padded) and each value's index in its
    row's codebook, vectorised with one lexsort."""
    order = np.lexsort((values, row))
    r, v = row[order], values[order]
    row_start = np.concatenate([[True], r[1:] != r[:-1]])
    new = row_start | np.concatenate([[True], v[1:] != v[:-1]])
    uid = np.cumsum(new) - 1
    first_uid = np.maximum.accumulate(np.where(row_start, uid, 0))
    code = uid - first_uid
    table = np.zeros((rows, int(code.max()) + 1), dtype=np.float32)
    table[r[new], code[new]] = v[new]
    codes = np.empty_like(code)
    codes[order] = code
    return table, codes


def _float_stream(values: np.ndarray, store: str) -> tuple[np.ndarray, int]:
    raw = np.ascontiguousarray(values, dtype=np.dtype(store).newbyteorder("<"))
    return np.frombuffer(raw.tobytes(), dtype=np.uint8).astype(np.int64), 8


def _floats(stream: tuple[str, bytes, int, int], store: np.dtype[Any]) -> np.ndarray:
    raw = decode(*stream).astype(np.uint8).tobytes()
    return np.frombuffer(raw, dtype=store.newbyteorder("<")).astype(np.float32)


def _split(meta: list[list[Any]], data: bytes) -> list[tuple[str, bytes, int, int]]:
    """``(codec, bytes, count, bits)`` of every stream of an entry, checking the lengths."""
    out, at = [], 0
    for codec, count, bits, nbytes in meta:
        if at + nbytes > len(data):
            raise ValueError("the tensor's streams run past its data")
        out.append((str(codec), data[at:at + nbytes], int(count), int(bits)))
        at += nbytes
    return out


def _checked(codes: np.ndarray, size: int) -> np.ndarray:
    if len(codes) and codes.max() >= size:
        raise ValueError(f"codebook index {int(codes.max())} outside a codebook of {size}")
    return codes


def _bits(count: int) -> int:
    return max(1, math.ceil(math.log2(count)))


def _exact_half(values: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        half = values.astype(np.float16)
    return bool(np.array_equal(half.astype(np.float32), values))

