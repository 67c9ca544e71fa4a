"""Serving causal LMs: OpenAI's ``/v1/chat/completions`` and ``/v1/completions`` (``server``,
``handler``, ``openai_api``) over continuous batching of decode steps (``continuous``) on a
:class:`~slimkit.serve.llm.engine.DecodeEngine` (``torch_engine``), with sampling, stop strings
and streaming detokenisation."""
