"""Entropy coders for the integer streams of a ``.slim`` file, and the choice of the smallest.

A stream is a 1-D array of symbols, each ``bits`` wide (1..16). Its plain form is the
bit-packed array (``raw``); ``huffman`` codes the symbols (see :mod:`.huffman`); ``zlib``
(raw DEFLATE, level 9) and ``lzma`` (raw LZMA2, preset 9e, 1 MiB window) compress the
bit-packed bytes with the standard library's well-kept compressors (``zstandard`` is not
installed here). Every codec is measured on every stream and the
smallest output is kept, its name recorded in the manifest.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from slimkit.compact import huffman
from slimkit.errors import InputError
from slimkit.registry import Registry

# a fixed 1 MiB window: larger ones cost 50 ms per call to allocate (measured), and raw LZMA2
# streams must be read with the window they were written with
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME,
                 "dict_size": 1 << 20}]


@dataclass(frozen=True)
class Codec:
    encode: Callable[[np.ndarray, int], bytes]  # (symbols, bits) -> bytes
    decode: Callable[[bytes, int, int], np.ndarray]  # (data, count, bits) -> symbols


CODECS: Registry[Codec] = Registry("stream codec")
ALL_CODECS = ("raw", "huffman", "zlib", "lzma")
STDLIB_CODECS = ("raw", "zlib", "lzma")
HUFFMAN_ONLY = ("raw", "huffman")


def pack_bits(symbols: np.ndarray, bits: int) -> bytes:
    """``symbols`` as a bit-packed, MSB-first byte string (``bits`` per symbol).

    Example:
        >>> pack_bits(np.array([1, 2, 3, 0]), 2).hex()
        '6c'
    """
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    if bits == 8:
        return symbols.astype(np.uint8).tobytes()
    shifts = np.arange(bits - 1, -1, -1)
    return np.packbits(((symbols[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()


def unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """The inverse of :func:`pack_bits` (int64)."""
    if len(data) * 8 < count * bits:
        raise ValueError(f"stream is truncated: {len(data)} bytes for {count} x {bits} bits")
    if bits == 8:
        return np.frombuffer(data, dtype=np.uint8, count=count).astype(np.int64)
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:count * bits]
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    return flat.reshape(count, bits).astype(np.int64) @ weights


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9)  # raw DEFLATE: no header, no adler
    return packer.compress(data) + packer.flush()


CODECS.register("raw")(Codec(pack_bits, lambda data, n, bits: unpack_bits(data, n, bits)))
CODECS.register("huffman")(Codec(
    lambda s, bits: huffman.encode_body(s, 1 << bits),
    lambda data, n, bits: huffman.decode_body(data, n, 1 << bits)))
CODECS.register("zlib")(Codec(
    lambda s, bits: _deflate(pack_bits(s, bits)),
    lambda data, n, bits: unpack_bits(zlib.decompress(data, -15), n, bits)))
CODECS.register("lzma")(Codec(
    lambda s, bits: lzma.compress(pack_bits(s, bits), lzma.FORMAT_RAW, filters=LZMA_FILTERS),
    lambda data, n, bits: unpack_bits(
        lzma.decompress(data, lzma.FORMAT_RAW, filters=LZMA_FILTERS), n, bits)))


def check_codecs(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` validated against :data:`CODECS`; ``raw`` is always a candidate."""
    for name in names:
        CODECS.get(name)
    if not names:
        raise InputError(f"give at least one stream codec of {CODECS.names()}")
    return tuple(dict.fromkeys(("raw", *names)))


def encode_best(symbols: np.ndarray, bits: int,
                codecs: tuple[str, ...] = ALL_CODECS) -> tuple[str, bytes, dict[str, int]]:
    """Encode ``symbols`` with every codec of ``codecs``; return the smallest output's codec
    name, its bytes, and the size each codec gave.

    Example:
        >>> name, data, sizes = encode_best(np.zeros(1000, dtype=np.int64), 4)
        >>> name in ("huffman", "zlib", "lzma"), sizes["raw"]
        (True, 500)
    """
    if not 1 <= bits <= 16:
        raise InputError(f"stream symbols are 1..16 bits wide, got {bits}")
    outputs = {name: CODECS.get(name).encode(symbols, bits) for name in check_codecs(codecs)}
    sizes = {name: len(data) for name, data in outputs.items()}
    best = min(outputs, key=lambda name: (sizes[name], name != "raw"))
    return best, outputs[best], sizes


def decode(name: str, data: bytes, count: int, bits: int) -> np.ndarray:
    """Decode a stream; damaged data raises ``ValueError`` with the codec's reason."""
    try:
        return CODECS.get(name).decode(data, count, bits)
    except (zlib.error, lzma.LZMAError, IndexError) as exc:
        raise ValueError(f"{name} stream is damaged: {exc}") from None
