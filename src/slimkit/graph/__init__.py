"""The model graph: channel dependencies traced with ``torch.fx`` (``channels``, ``trace``,
``rules``), layer rules and module surgery (``layers``), transformer blocks recognised by
structure (``transformer``), the axis graph of any model traced with ``torch.export``
(``axes``, ``axes_trace``, op rules in ``axes_rules``/``axes_ops``/``axes_layers``, edits in
``axes_edits``) with its generic per-tensor surgery (``slicing``), plans of edits replayed on
a fresh model (``plan``) and weight masks (``masks``). Pruning and low rank build on it."""
