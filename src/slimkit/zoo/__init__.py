"""The built-in zoo, ``builtin:NAME`` (``catalog``): digits models trained once on first use
(``digits``), reference architectures at random init (``architectures``) and all-MiniLM-L6-v2
when its package is installed. It registers the ``builtin:`` format with the loader."""

from slimkit.zoo.catalog import FORMAT, ZOO, load_builtin, zoo_names

__all__ = ["FORMAT", "ZOO", "load_builtin", "zoo_names"]
