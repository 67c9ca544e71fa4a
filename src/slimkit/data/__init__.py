"""Data in: the Dataset wrapper and the loaders of data specs."""

from slimkit.data.dataset import Dataset
from slimkit.data.sources import load_data, synthetic

__all__ = ["Dataset", "load_data", "synthetic"]
