"""Canonical Huffman coding of small-alphabet integer streams (at most 65,536 symbols), as Deep
Compression uses it for cluster indices and relative sparse indices.

Written by hand: neither the standard library nor the installed packages expose a Huffman coder
over an arbitrary integer alphabet (zlib's is internal to DEFLATE and works on bytes with LZ77
in front). Encoding is vectorised with NumPy; decoding reads a lookup table indexed by the
next ``max_length`` bits at every bit position (computed vectorised), then walks the chain of
code lengths in plain Python, one step per symbol.

A stream is self-describing: ``varint(count) varint(alphabet) lengths bits`` where ``lengths``
are the code lengths of symbols ``0..alphabet-1`` packed in 4-bit nibbles (0 = unused; codes
are limited to 15 bits) and ``bits`` is the MSB-first bit stream, zero-padded to a byte.
"""

from __future__ import annotations

import heapq

import numpy as np

from slimkit.errors import InputError

MAX_LENGTH = 15
CHUNK = 1 << 18  # symbols encoded at a time (bounds the temporary bit matrix)


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code lengths (<= 15 bits) for symbol ``counts``; unused symbols get 0.

    Example:
        >>> code_lengths(np.array([5, 1, 1, 2])).tolist()
        [1, 3, 3, 2]
    """
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.int64)
    used = np.flatnonzero(counts)
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    work = counts.copy()
    while len(used):
        lengths[used] = _unlimited_lengths(work[used])
        if lengths.max() <= MAX_LENGTH:
            break
        work[used] = np.maximum(work[used] >> 1, 1)  # flatten the distribution and retry
    return lengths


def _unlimited_lengths(counts: np.ndarray) -> np.ndarray:
    heap: list[tuple[int, int, tuple[int, ...]]] = [(int(c), i, (i,))
                                                    for i, c in enumerate(counts)]
    heapq.heapify(heap)
    depth = np.zeros(len(counts), dtype=np.int64)
    tie = len(counts)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        merged = s1 + s2
        depth[list(merged)] += 1
        heapq.heappush(heap, (c1 + c2, tie, merged))
        tie += 1
    return depth


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of every symbol from its code length (ordered by length, symbol)."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = sorted((int(n), s) for s, n in enumerate(lengths) if n > 0)
    code, previous = 0, 0
    for n, symbol in order:
        code <<= n - previous
        codes[symbol] = code
        code, previous = code + 1, n
    return codes


def encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """Huffman-code ``symbols`` (integers in ``[0, alphabet)``) into a self-describing stream.

    Example:
        >>> data = np.array([0, 0, 0, 1, 2, 0, 3, 0])
        >>> decode(encode(data, 4)).tolist()
        [0, 0, 0, 1, 2, 0, 3, 0]
    """
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    return _varint(len(symbols)) + _varint(alphabet) + encode_body(symbols, alphabet)


def decode(data: bytes) -> np.ndarray:
    """The symbols of a stream written by :func:`encode` (int64)."""
    count, pos = _read_varint(data, 0)
    alphabet, pos = _read_varint(data, pos)
    return decode_body(data[pos:], count, alphabet)


def encode_body(symbols: np.ndarray, alphabet: int) -> bytes:
    """The code table and bit stream of ``symbols``, without their count and alphabet size
    (for containers that record those elsewhere)."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    if not 1 <= alphabet <= 65536:
        raise InputError(f"Huffman alphabets hold 1..65536 symbols, got {alphabet}")
    if len(symbols) and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise InputError(f"symbols must lie in [0, {alphabet})")
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    if not len(symbols):
        return b""
    codes = canonical_codes(lengths)
    chunks = [_code_bits(symbols[i:i + CHUNK], lengths, codes)
              for i in range(0, len(symbols), CHUNK)]
    return _pack_nibbles(lengths) + np.packbits(np.concatenate(chunks)).tobytes()


def _code_bits(symbols: np.ndarray, lengths: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The concatenated code bits (MSB first) of ``symbols``, one uint8 per bit."""
    n, c = lengths[symbols], codes[symbols]
    shifts = np.arange(MAX_LENGTH - 1, -1, -1)
    # bit j of each code, left-aligned in MAX_LENGTH columns; then keep each code's first n
    bits = ((c[:, None] << (MAX_LENGTH - n)[:, None]) >> shifts) & 1
    keep = np.arange(MAX_LENGTH)[None, :] < n[:, None]
    return bits[keep].astype(np.uint8)


def decode_body(data: bytes, count: int, alphabet: int) -> np.ndarray:
    """The ``count`` symbols of a body written by :func:`encode_body`."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    table_bytes = (alphabet + 1) // 2
    if table_bytes > len(data):
        raise ValueError("Huffman stream is truncated (code table)")
    lengths = _unpack_nibbles(data[:table_bytes], alphabet)
    if not lengths.any():
        raise ValueError("Huffman stream has symbols but no codes")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=table_bytes))
    width = int(lengths.max())
    padded = np.concatenate([bits, np.zeros(width, dtype=np.uint8)]).astype(np.int64)
    # the integer value of the next `width` bits at every bit position
    window = np.zeros(len(bits), dtype=np.int64)
    for j in range(width):
        window = (window << 1) | padded[j:j + len(bits)]
    table_symbol, table_length = _lookup_table(lengths, width)
    step = table_length[window].tolist()
    starts, at, total = [], 0, len(bits)
    for _ in range(count):
        if at >= total or step[at] == 0:
            raise ValueError("Huffman stream is truncated or damaged")
        starts.append(at)
        at += step[at]
    if at > total:
        raise ValueError("Huffman stream is truncated")
    return table_symbol[window[np.array(starts, dtype=np.int64)]]


def _lookup_table(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For every ``width``-bit value: the symbol whose code prefixes it, and that code's
    length (0 where no code matches: a damaged stream)."""
    codes = canonical_codes(lengths)
    symbol = np.zeros(1 << width, dtype=np.int64)
    length = np.zeros(1 << width, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        n = int(lengths[s])
        first = int(codes[s]) << (width - n)
        symbol[first:first + (1 << (width - n))] = s
        length[first:first + (1 << (width - n))] = n
    return symbol, length


def _pack_nibbles(lengths: np.ndarray) -> bytes:
    values = np.asarray(lengths, dtype=np.uint8)
    if len(values) % 2:
        values = np.append(values, np.uint8(0))
    return ((values[0::2] << 4) | values[1::2]).astype(np.uint8).tobytes()


def _unpack_nibbles(data: bytes, count: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    return np.stack([raw >> 4, raw & 15], axis=1).ravel()[:count].astype(np.int64)


def _varint(value: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("stream is truncated (varint)")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos
