"""Compact model files (``.slim``: codebooks, bit-packed indices, sparse relative indices,
Huffman or stdlib compression per stream, SHA-256 checked) and the Deep Compression pipeline
that produces them."""

from slimkit.compact.container import SlimInfo, is_slim_file, load_slim, read_slim, write_slim
from slimkit.compact.pipeline import DeepCompressConfig, DeepCompressResult, deep_compress

__all__ = ["DeepCompressConfig", "DeepCompressResult", "SlimInfo", "deep_compress",
           "is_slim_file", "load_slim", "read_slim", "write_slim"]
