"""The model graph: channel dependencies traced with ``torch.fx`` (``channels``, ``trace``,
``rules``), layer rules and module surgery (``layers``), transformer blocks recognised by
structure (``transformer``), plans of edits replayed on a fresh model (``plan``) and weight
masks (``masks``). Pruning and low rank build on it."""
